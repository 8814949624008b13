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
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { type FileServer, makeTestCa, startFileServer } from '../support/http-server.js';
import { EXAMPLES, kiln, REPO, removeDir, tempDir, verticesByName } from './harness.js';

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
