/**
 * The HTTP source's logic: its attrs as the loader checks and the source
 * parses them, the default file name, credentials masked in URLs, and the
 * download itself (redirects, conditional requests, retries, errors)
 * against a server on 127.0.0.1 that this process starts.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { KilnError } from '../../../src/errors.js';
import { loadDefinition } from '../../../src/llb/load.js';
import { maskUrlCredentials, opDisplayName } from '../../../src/llb/op-name.js';
import { download, type Downloaded, type DownloadRequest, MAX_REDIRECTS, trustedCertificates } from '../../../src/source/http/download.js';
import { contentDispositionFilename, defaultFilename, parseHttpSource } from '../../../src/source/http/options.js';
import { HttpStatusError } from '../../../src/source/http/status-error.js';
import { type FileServer, startFileServer } from '../../support/http-server.js';
import { assertProblem, withOp } from '../llb/problems.js';

const attr = (key: string): string => `ops.x.source.attrs[${JSON.stringify(key)}]`;
const source = (identifier: string, attrs: Record<string, string>): unknown => withOp({ source: { identifier, attrs } });

describe('http source attrs', () => {
  it('the loader accepts http.header.NAME and http.authheadersecret, and refuses bad ones naming the field', () => {
    assert.ok(loadDefinition(source('https://127.0.0.1/f', { 'http.header.X-Api-Version': '2', 'http.authheadersecret': 'token' })));
    assertProblem(source('https://127.0.0.1/f', { 'http.header.bad name': 'v' }), attr('http.header.bad name'), 'must name a header');
    assertProblem(source('https://127.0.0.1/f', { 'http.header.': 'v' }), attr('http.header.'), 'unknown attr "http.header."');
    assertProblem(source('https://127.0.0.1/f', { 'http.header.X': 'a\r\nInjected: 1' }), attr('http.header.X'), 'must be one line');
    assertProblem(source('https://127.0.0.1/f', { 'http.authheadersecret': '' }), attr('http.authheadersecret'), 'must be the id of a build secret');
    assertProblem(source('https://127.0.0.1/f', { 'http.filename': '..' }), attr('http.filename'), 'not "." or ".."');
    assertProblem(source('https://127.0.0.1/f', { 'http.headers.X': 'v' }), attr('http.headers.X'), 'http.header.NAME');
  });

  it('parses the attrs, with BuildKit defaults: the URL path last segment, else index; mode 0600', () => {
    const parsed = parseHttpSource('https://127.0.0.1/dir/tool.tar.gz?x=1', {
      'http.perm': '0755',
      'http.uid': '1000',
      'http.gid': '1001',
      'http.header.X-Api-Version': '2',
      'http.authheadersecret': 'tok',
      'http.checksum': `sha256:${'a'.repeat(64)}`,
    });
    assert.equal(parsed.filename, 'tool.tar.gz');
    assert.equal(parsed.perm, 0o755);
    assert.equal(parsed.uid, 1000);
    assert.equal(parsed.gid, 1001);
    assert.deepEqual(parsed.headers, { 'x-api-version': '2' });
    assert.equal(parsed.authHeaderSecret, 'tok');
    assert.equal(parsed.checksum, `sha256:${'a'.repeat(64)}`);
    const plain = parseHttpSource('http://127.0.0.1/', {});
    assert.equal(plain.filename, 'index');
    assert.equal(plain.perm, 0o600);
    assert.equal(plain.uid, undefined);
    assert.equal(parseHttpSource('http://127.0.0.1/a', { 'http.filename': 'b' }).filename, 'b');
  });

  it('the default file name is the decoded last segment, or index when it cannot be one', () => {
    const name = (url: string) => defaultFilename(new URL(url));
    assert.equal(name('https://h/a/b%20c.txt'), 'b c.txt');
    assert.equal(name('https://h/a/'), 'index');
    assert.equal(name('https://h'), 'index');
    assert.equal(name('https://h/a/%2F'), 'index');
    assert.equal(name('https://h/a/%2e%2e'), 'index');
    assert.equal(name('https://h/a/%E0%A4%A'), 'index');
  });

  it('a control character makes no file name: index from a URL, refused in http.filename', () => {
    assert.equal(defaultFilename(new URL('https://h/a%0Ab')), 'index');
    assert.equal(defaultFilename(new URL('https://h/a%7F')), 'index');
    assertProblem(source('https://127.0.0.1/f', { 'http.filename': 'a\nb' }), attr('http.filename'), 'control characters');
  });

  it('reads the file name of a Content-Disposition as BuildKit does: its last segment, filename* first', () => {
    assert.equal(contentDispositionFilename('attachment; filename="tool-1.2.tar.gz"'), 'tool-1.2.tar.gz');
    assert.equal(contentDispositionFilename('attachment; filename=plain.txt; size=3'), 'plain.txt');
    assert.equal(contentDispositionFilename(`attachment; filename="fallback.txt"; filename*=UTF-8''%E2%82%AC%20rates.txt`), '€ rates.txt');
    assert.equal(contentDispositionFilename(`attachment; filename*=iso-8859-1'en'%A3.txt`), '£.txt');
    assert.equal(contentDispositionFilename('attachment; filename="q\\"uote"'), 'q"uote');
    assert.equal(contentDispositionFilename('attachment; filename="../../etc/passwd"'), 'passwd');
    assert.equal(contentDispositionFilename('attachment; filename="dir/"'), undefined);
    assert.equal(contentDispositionFilename('attachment; filename=".."'), undefined);
    assert.equal(contentDispositionFilename('attachment; filename="a%0Ab"'), 'a%0Ab');
    assert.equal(contentDispositionFilename('attachment'), undefined);
    assert.equal(contentDispositionFilename('inline; name="x"'), undefined);
  });

  it('masks user:password in URLs, in progress names and loader messages', () => {
    assert.equal(maskUrlCredentials('https://user:s3cret@127.0.0.1:8080/f?q=a@b'), 'https://***@127.0.0.1:8080/f?q=a@b');
    assert.equal(maskUrlCredentials('https://127.0.0.1/f@x'), 'https://127.0.0.1/f@x');
    assert.equal(maskUrlCredentials('local://ctx'), 'local://ctx');
    const def = loadDefinition(source('https://u:s3cret@127.0.0.1/f', {}));
    const op = def.ops.get('x');
    assert.ok(op !== undefined);
    assert.equal(opDisplayName(op), 'https://***@127.0.0.1/f');
    assert.throws(() => loadDefinition(source('https://u:s3cret@exa mple/f', {})), (err: unknown) => err instanceof KilnError && !err.message.includes('s3cret'));
  });

  it('trusts NODE_EXTRA_CA_CERTS besides the system bundle and node list', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-unit-ca-'));
    try {
      const pem = '-----BEGIN CERTIFICATE-----\nkiln-test\n-----END CERTIFICATE-----\n';
      await writeFile(join(dir, 'extra.pem'), pem);
      const trusted = trustedCertificates({ NODE_EXTRA_CA_CERTS: join(dir, 'extra.pem'), SSL_CERT_FILE: join(dir, 'missing.pem') });
      assert.equal(trusted.at(-1), pem);
      assert.ok(trusted.length > 1, "node's own list is kept");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('http download', () => {
  let server: FileServer;
  let other: FileServer;
  let dir: string;
  const site = { op: 'x', field: 'ops.x.source.identifier' };
  const get = (path: string, extra: Partial<DownloadRequest> = {}) =>
    download({ url: new URL(`${server.origin}${path}`), headers: {}, dir, signal: AbortSignal.timeout(30_000), site, ...extra });

  before(async () => {
    server = await startFileServer();
    other = await startFileServer();
    dir = await mkdtemp(join(tmpdir(), 'kiln-unit-http-'));
  });
  after(async () => {
    await server.stop();
    await other.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('streams the body into a temp file with its digest, validators and progress', async () => {
    const body = Buffer.alloc(3 * 1024 * 1024, 7);
    server.set('/big', { body });
    const seen: [number, number | undefined][] = [];
    const got = (await get('/big', { onProgress: (current, total) => seen.push([current, total]) })) as Downloaded;
    assert.equal(got.status, 'downloaded');
    assert.equal(got.size, body.byteLength);
    assert.deepEqual(await readFile(got.file), body);
    assert.match(got.digest, /^sha256:[0-9a-f]{64}$/);
    assert.ok(got.validators.etag !== undefined && got.validators.lastModified !== undefined);
    assert.deepEqual(seen.at(-1), [body.byteLength, body.byteLength]);
    await rm(got.file);
  });

  it('a 17 MiB body: the digest of every byte, in order, and the file byte for byte', async () => {
    const body = Buffer.alloc(17 * 1024 * 1024 + 12345);
    for (let i = 0; i < body.byteLength; i += 4096) body.writeUInt32LE((i * 2654435761) >>> 0, i);
    server.set('/bigger', { body });
    const got = (await get('/bigger')) as Downloaded;
    assert.equal(got.digest, `sha256:${createHash('sha256').update(body).digest('hex')}`);
    assert.deepEqual(await readFile(got.file), body);
    await rm(got.file);
  });

  it('sends the conditional request and takes a 304 as not modified', async () => {
    server.set('/same', { body: 'same\n' });
    const first = (await get('/same')) as Downloaded;
    await rm(first.file);
    const again = await get('/same', { conditional: first.validators });
    assert.equal(again.status, 'not-modified');
    const last = server.requests.at(-1);
    assert.equal(last?.headers['if-none-match'], first.validators.etag);
    assert.equal(last?.headers['if-modified-since'], first.validators.lastModified);
  });

  it('follows redirects, records the final URL, and gives up after 10', async () => {
    server.set('/target', { body: 'moved\n' });
    server.set('/r1', { redirect: '/r2', status: 301 });
    server.set('/r2', { redirect: `${server.origin}/target`, status: 307 });
    const got = (await get('/r1')) as Downloaded;
    assert.equal(got.finalUrl.href, `${server.origin}/target`);
    await rm(got.file);
    server.set('/loop', { redirect: '/loop' });
    const before = server.requests.length;
    await assert.rejects(get('/loop'), (err: unknown) => err instanceof KilnError && err.code === 'E_HTTP_SOURCE' && /more than 10 redirects/.test(err.message));
    assert.equal(server.requests.length - before, MAX_REDIRECTS + 1);
  });

  it('sends the Authorization secret to its origin only, never across a redirect', async () => {
    other.set('/elsewhere', { body: 'x' });
    server.set('/auth', { redirect: `${other.origin}/elsewhere` });
    const got = (await get('/auth', { authorization: 'Bearer kiln-secret' })) as Downloaded;
    await rm(got.file);
    assert.equal(server.requests.at(-1)?.headers.authorization, 'Bearer kiln-secret');
    assert.equal(other.requests.at(-1)?.headers.authorization, undefined);
  });

  it('retries 5xx and a body cut short, then succeeds', async () => {
    server.set('/flaky', { failFirst: 2, status: 503, then: { body: 'ok\n' } });
    const before = server.requests.length;
    const got = (await get('/flaky')) as Downloaded;
    assert.equal(await readFile(got.file, 'utf8'), 'ok\n');
    await rm(got.file);
    assert.equal(server.requests.length - before, 3);
  });

  it('a 4xx is one HttpStatusError naming the URL (credentials masked) and status, not retried; nothing is left behind', async () => {
    const before = server.requests.length;
    const url = new URL(`${server.origin}/missing`);
    url.username = 'me';
    url.password = 'hunter2';
    await assert.rejects(get('', { url }), (err: unknown) => {
      assert.ok(err instanceof HttpStatusError);
      assert.equal(err.status, 404);
      assert.equal(err.code, 'E_HTTP_SOURCE');
      assert.equal(err.message, `GET http://***@${url.host}/missing: the server answered 404 Not Found`);
      return true;
    });
    assert.equal(server.requests.length - before, 1);
    assert.equal(server.requests.at(-1)?.headers.authorization, `Basic ${Buffer.from('me:hunter2').toString('base64')}`, 'URL credentials are sent as basic auth');
    server.set('/cut', { cutBody: Buffer.alloc(4096, 1) });
    await assert.rejects(get('/cut'), /after 5 attempts/);
    assert.deepEqual(await readdir(dir), [], 'no temp file left');
  });

  it('a stalled body times out (and is retried); an abort stops at once with its reason; no temp file is left', async () => {
    server.set('/stall', { stallBody: Buffer.alloc(256 * 1024, 2) });
    const before = server.requests.length;
    await assert.rejects(get('/stall', { idleTimeoutMs: 100 }), /: the body stopped after 131072 of 262144 bytes: no data for 0\.1 s \(ETIMEDOUT\), after 5 attempts$/);
    assert.equal(server.requests.length - before, 5);
    server.set('/silent', { silent: true });
    await assert.rejects(get('/silent', { idleTimeoutMs: 100 }), /\/silent: no response: no data for 0\.1 s, after 5 attempts$/);
    const controller = new AbortController();
    const reason = new Error('stop now');
    const started = get('/stall', { signal: controller.signal, onProgress: () => controller.abort(reason) });
    await assert.rejects(started, (err: unknown) => err === reason);
    assert.deepEqual(await readdir(dir), [], 'no temp file left');
  });
});
