/**
 * HTTP(S) sources through the CLI, against servers on 127.0.0.1 that the
 * test starts: the file exported; an unchanged file rebuilt as CACHED after
 * a conditional request that downloads nothing; a 404 as one clear line and
 * a non-zero exit; HTTPS trusted through NODE_EXTRA_CA_CERTS with a test CA
 * made by openssl; and an Authorization secret given with `--secret` that
 * reaches the server and is found nowhere in kiln's root, the output or
 * anything kiln printed.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { type FileServer, makeTestCa, startFileServer } from '../support/http-server.js';
import { errorLine, EXAMPLES, kiln, REPO, removeDir, tempDir, verticesByName } from './harness.js';

describe('http sources from the CLI', () => {
  let work: string;
  let server: FileServer;
  let n = 0;
  before(async () => {
    work = await tempDir('http');
    server = await startFileServer();
  });
  after(async () => {
    await server.stop();
    await removeDir(work);
  });

  const definition = async (source: Record<string, unknown>): Promise<string> => {
    const file = join(work, `def${n++}.json`);
    await writeFile(file, JSON.stringify({ version: 1, ops: { fetch: { source } }, result: 'fetch' }));
    return file;
  };
  const build = (file: string, args: readonly string[], env: Record<string, string> = {}) => {
    const out = join(work, `out${n++}`);
    return kiln(['build', file, '--root', join(work, 'root'), '-o', `type=local,dest=${out}`, '--progress', 'rawjson', ...args], { env }).then((run) => ({ run, out }));
  };

  test('fetches a file; the rebuild sends a conditional request, downloads nothing and reports CACHED', async () => {
    server.set('/release/notes.txt', { body: 'release notes\n' });
    const url = `${server.origin}/release/notes.txt`;
    const file = await definition({ identifier: url, attrs: { 'http.perm': '0644' } });
    const first = await build(file, []);
    assert.equal(first.run.exitCode, 0, first.run.stderr);
    assert.equal(await readFile(join(first.out, 'notes.txt'), 'utf8'), 'release notes\n');
    assert.equal((await stat(join(first.out, 'notes.txt'))).mode & 0o777, 0o644);
    assert.ok(first.run.stderr.includes('"id":"downloading"'), 'download progress is reported');

    const requests = server.requests.length;
    const bytes = server.bodyBytes;
    const second = await build(file, []);
    assert.equal(second.run.exitCode, 0, second.run.stderr);
    assert.equal(verticesByName(second.run.stderr).get(url)?.cached, true);
    assert.deepEqual(server.requests.slice(requests).map((r) => r.status), [304]);
    assert.equal(server.bodyBytes, bytes, 'no body sent');
    const plain = await build(file, ['--progress', 'plain']);
    assert.match(plain.run.stderr, /CACHED/);
  });

  test('llb-examples/http-source.json builds against scripts/example-http-server.mjs, and its rebuild is CACHED', async () => {
    const child = spawn(process.execPath, [join(REPO, 'scripts', 'example-http-server.mjs'), join(EXAMPLES, 'http-files'), '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const [origin] = (await once(createInterface({ input: child.stdout }), 'line')) as [string];
      // The example names the script's default port; this run took a free one.
      const graph = (await readFile(join(EXAMPLES, 'http-source.json'), 'utf8')).replaceAll('http://127.0.0.1:8787', origin);
      const file = join(work, 'http-example.json');
      await writeFile(file, graph);
      const first = await build(file, []);
      assert.equal(first.run.exitCode, 0, first.run.stderr);
      const hello = await execa(join(first.out, 'usr/local/bin/hello'));
      assert.equal(hello.stdout, 'hello from a file kiln fetched over HTTP');
      assert.match(await readFile(join(first.out, 'usr/share/doc/hello/notes.txt'), 'utf8'), /^Release notes/);
      const second = await build(file, []);
      assert.equal(second.run.exitCode, 0, second.run.stderr);
      assert.ok([...verticesByName(second.run.stderr).values()].every((v) => v.cached), second.run.stderr);
    } finally {
      child.kill('SIGTERM');
    }
  });

  test('without http.filename the Content-Disposition of the response names the file, also on the 304 rebuild; http.filename wins', async () => {
    server.set('/download', { body: 'tool\n', headers: { 'content-disposition': 'attachment; filename="tool-1.2.tar.gz"' } });
    const url = `${server.origin}/download?id=7`;
    const file = await definition({ identifier: url });
    const first = await build(file, []);
    assert.equal(first.run.exitCode, 0, first.run.stderr);
    assert.deepEqual(await readdir(first.out), ['tool-1.2.tar.gz']);
    const requests = server.requests.length;
    const second = await build(file, []);
    assert.equal(second.run.exitCode, 0, second.run.stderr);
    assert.equal(verticesByName(second.run.stderr).get(url)?.cached, true);
    assert.deepEqual(server.requests.slice(requests).map((r) => r.status), [304]);
    assert.deepEqual(await readdir(second.out), ['tool-1.2.tar.gz']);
    const named = await build(await definition({ identifier: url, attrs: { 'http.filename': 'tool.tgz' } }), []);
    assert.equal(named.run.exitCode, 0, named.run.stderr);
    assert.deepEqual(await readdir(named.out), ['tool.tgz']);
  });

  test('a gzip Content-Encoding body is stored decoded, as BuildKit stores it, and http.checksum is that of the decoded content', async () => {
    const text = 'served gzip-encoded\n'.repeat(100);
    server.set('/encoded.txt', { body: text, gzip: true });
    const checksum = `sha256:${createHash('sha256').update(text).digest('hex')}`;
    const { run, out } = await build(await definition({ identifier: `${server.origin}/encoded.txt`, attrs: { 'http.checksum': checksum } }), []);
    assert.equal(run.exitCode, 0, run.stderr);
    assert.equal(await readFile(join(out, 'encoded.txt'), 'utf8'), text);
  });

  test('as BuildKit: mtime 0 without Last-Modified (the same on every machine), http.perm "0" is 0600, any 2xx is the body', async () => {
    server.set('/undated.txt', { body: 'undated\n', lastModifiedHeader: false });
    server.set('/nonauthoritative', { status: 203 });
    server.set('/nothing', { status: 204 });
    const undated = await build(await definition({ identifier: `${server.origin}/undated.txt`, attrs: { 'http.perm': '0' } }), []);
    assert.equal(undated.run.exitCode, 0, undated.run.stderr);
    const info = await stat(join(undated.out, 'undated.txt'));
    assert.equal(info.mtimeMs, 0);
    assert.equal(info.mode & 0o7777, 0o600);
    const other = await build(await definition({ identifier: `${server.origin}/nonauthoritative` }), []);
    assert.equal(other.run.exitCode, 0, other.run.stderr);
    assert.equal(await readFile(join(other.out, 'nonauthoritative'), 'utf8'), 'status 203\n');
    const empty = await build(await definition({ identifier: `${server.origin}/nothing` }), []);
    assert.equal(empty.run.exitCode, 0, empty.run.stderr);
    assert.equal((await stat(join(empty.out, 'nothing'))).size, 0);
  });

  test('a body cut short fails saying how much came, and nothing of it is cached: the next build downloads it whole', async () => {
    const body = randomBytes(4096);
    server.set('/cut.bin', { cutBody: body });
    const file = await definition({ identifier: `${server.origin}/cut.bin` });
    const cut = await build(file, ['--progress', 'plain']);
    assert.equal(cut.run.exitCode, 1);
    assert.match(errorLine(cut.run.stderr), /GET http:\/\/127\.0\.0\.1:\d+\/cut\.bin: the body stopped after 2048 of 4096 bytes: .*after 5 attempts$/);
    server.set('/cut.bin', { body });
    const whole = await build(file, []);
    assert.equal(whole.run.exitCode, 0, whole.run.stderr);
    assert.deepEqual(await readFile(join(whole.out, 'cut.bin')), body);
  });

  test('an http.header value holding CR/LF is refused before any request, in one line', async () => {
    const requests = server.requests.length;
    const file = await definition({ identifier: `${server.origin}/x`, attrs: { 'http.header.X-Note': 'a\r\nInjected: 1' } });
    const { run } = await build(file, ['--progress', 'plain']);
    assert.equal(run.exitCode, 2);
    assert.equal(run.stderr.trimEnd().split('\n').length, 1, run.stderr);
    assert.match(run.stderr, /attrs\["http\.header\.X-Note"\]: must be one line.*got "a\\r\\nInjected: 1"$/m);
    assert.equal(server.requests.length, requests);
  });

  test('credentials in http.header.* (Authorization, Cookie) are not sent on after a redirect to another origin; other headers are', async () => {
    const other = await startFileServer();
    try {
      other.set('/moved.txt', { body: 'moved\n' });
      server.set('/old.txt', { redirect: `${other.origin}/moved.txt`, status: 301 });
      const attrs = { 'http.header.Authorization': 'Bearer for-the-first-origin', 'http.header.Cookie': 'session=abc', 'http.header.X-Api-Version': '2' };
      const { run, out } = await build(await definition({ identifier: `${server.origin}/old.txt`, attrs }), []);
      assert.equal(run.exitCode, 0, run.stderr);
      assert.equal(await readFile(join(out, 'old.txt'), 'utf8'), 'moved\n');
      const first = server.requests.at(-1)?.headers;
      assert.equal(first?.authorization, 'Bearer for-the-first-origin');
      assert.equal(first?.cookie, 'session=abc');
      const moved = other.requests.at(-1)?.headers;
      assert.equal(moved?.authorization, undefined);
      assert.equal(moved?.cookie, undefined);
      assert.equal(moved?.['x-api-version'], '2');
    } finally {
      await other.stop();
    }
  });

  test('a 404 is one clear line naming the URL and status, credentials masked, and a non-zero exit', async () => {
    const host = new URL(server.origin).host;
    const file = await definition({ identifier: `http://reader:pa55word@${host}/no/such/file` });
    const { run } = await build(file, ['--progress', 'plain']);
    assert.notEqual(run.exitCode, 0);
    const errorLines = run.stderr.split('\n').filter((l) => l.startsWith('error'));
    assert.equal(errorLines.length, 1, run.stderr);
    assert.match(errorLines[0] ?? '', new RegExp(`GET http://\\*\\*\\*@${host.replaceAll('.', '\\.')}/no/such/file: the server answered 404 Not Found`));
    assert.ok(!run.stderr.includes('pa55word'), run.stderr);
  });

  test('HTTPS with a private CA given in NODE_EXTRA_CA_CERTS; without it, a TLS error that says how', async () => {
    const ca = await makeTestCa(work);
    const secure = await startFileServer({ tls: { key: ca.key, cert: ca.cert } });
    try {
      secure.set('/tls.txt', { body: 'over tls\n' });
      const file = await definition({ identifier: `${secure.origin}/tls.txt` });
      const refused = await build(file, ['--progress', 'plain']);
      assert.notEqual(refused.run.exitCode, 0);
      assert.match(refused.run.stderr, /NODE_EXTRA_CA_CERTS/);
      const { run, out } = await build(file, [], { NODE_EXTRA_CA_CERTS: ca.caFile });
      assert.equal(run.exitCode, 0, run.stderr);
      assert.equal(await readFile(join(out, 'tls.txt'), 'utf8'), 'over tls\n');
    } finally {
      await secure.stop();
    }
  });

  test('http.authheadersecret: refused without --secret; given, it reaches the server and is nowhere in the root, output or progress', async () => {
    const token = randomBytes(16).toString('hex');
    const secretFile = join(work, 'token');
    await writeFile(secretFile, `Bearer ${token}\n`);
    server.set('/private.txt', { body: 'private\n' });
    const file = await definition({ identifier: `${server.origin}/private.txt`, attrs: { 'http.authheadersecret': 'tok' } });
    const requests = server.requests.length;
    const missing = await build(file, ['--progress', 'plain']);
    assert.notEqual(missing.run.exitCode, 0);
    assert.match(missing.run.stderr, /needs secret "tok" for http\.authheadersecret.*--secret id=tok/);
    assert.equal(server.requests.length, requests, 'refused before any request');

    const { run, out } = await build(file, ['--secret', `id=tok,src=${secretFile}`, '--log-level', 'trace']);
    assert.equal(run.exitCode, 0, run.stderr);
    assert.equal(server.requests.at(-1)?.headers.authorization, `Bearer ${token}`);
    assert.ok(!run.stdout.includes(token) && !run.stderr.includes(token), 'not in progress or logs');
    for (const dir of [join(work, 'root'), out]) {
      const grep = await execa('grep', ['-r', '-l', '-a', token, dir], { reject: false });
      assert.equal(grep.exitCode, 1, `the secret is in ${grep.stdout}`);
    }
  });
});
