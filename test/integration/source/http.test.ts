/**
 * HTTP(S) sources through the API (Session, solve, the builder's b.http)
 * against a file server on 127.0.0.1 that the test starts: the one file
 * with its name, mode, owner and mtime; http.checksum (no request when
 * cached, a mismatch names both digests); the conditional request that
 * makes an unchanged file a 304 and a cache hit, and a changed one a rerun;
 * the Authorization secret, refused before anything runs when missing and
 * found nowhere in kiln's root when given.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { DefinitionBuilder, KilnError, MissingGrantError, type ProgressEvent, type RawDefinition, Session, solve, type SolveOptions } from '../../../src/index.js';
import { type FileServer, startFileServer } from '../../support/http-server.js';

const sha256 = (data: string | Uint8Array) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

describe('http sources', () => {
  let dir: string;
  let server: FileServer;
  let n = 0;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-http-'));
    server = await startFileServer();
  });
  after(async () => {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  });

  /** Solves `definition` in a fresh session on `root`; returns the files (as `find` lists them), vertex states and requests made. */
  const build = async (root: string, definition: RawDefinition, options: SolveOptions = {}) => {
    const events: ProgressEvent[] = [];
    const requestsBefore = server.requests.length;
    const bytesBefore = server.bodyBytes;
    await using session = await Session.open({ root });
    await using result = await solve(session, definition, { ...options, progress: { emit: (e) => events.push(e) } });
    await using mounted = await result.mount();
    const { stdout } = await execa('find', ['.', '-mindepth', '1', '-printf', '%p %m %U:%G %TY-%Tm-%Td\n'], { cwd: mounted.path });
    const contents = new Map<string, string>();
    for (const name of await readdir(mounted.path)) contents.set(name, await readFile(join(mounted.path, name), 'utf8'));
    const vertices = events.filter((e) => e.type === 'vertex');
    return {
      listing: stdout,
      contents,
      cached: vertices.some((e) => e.completed !== undefined && e.cached) && !vertices.some((e) => !e.cached && e.completed !== undefined),
      requests: server.requests.slice(requestsBefore),
      bytes: server.bodyBytes - bytesBefore,
      events,
    };
  };
  const newRoot = () => join(dir, `root${n++}`);

  it('makes a filesystem of the one file, with http.filename, perm, uid, gid and the Last-Modified mtime', async () => {
    server.set('/dl/tool.sh', { body: '#!/bin/sh\necho tool\n', lastModified: new Date('2023-05-06T07:08:09Z') });
    const b = new DefinitionBuilder();
    const root = newRoot();
    const named = await build(root, b.build(b.http('named', `${server.origin}/dl/tool.sh`, { filename: 'run', perm: 0o750, uid: 1234, gid: 5678 })));
    assert.equal(named.listing, './run 750 1234:5678 2023-05-06');
    assert.equal(named.contents.get('run'), '#!/bin/sh\necho tool\n');
    const b2 = new DefinitionBuilder();
    const plain = await build(root, b2.build(b2.http('plain', `${server.origin}/dl/tool.sh`)));
    assert.equal(plain.listing, './tool.sh 600 0:0 2023-05-06', 'default name from the URL, mode 0600');
    server.set('/', { body: 'root page\n' });
    const b3 = new DefinitionBuilder();
    assert.equal((await build(root, b3.build(b3.http('index', `${server.origin}/`)))).listing.split(' ')[0], './index');
  });

  it('with http.checksum: the content is checked, and a cached result needs no request', async () => {
    const body = randomBytes(1000);
    server.set('/pinned.bin', { body });
    const b = new DefinitionBuilder();
    const definition = b.build(b.http('pinned', `${server.origin}/pinned.bin`, { checksum: sha256(body) }));
    const root = newRoot();
    const first = await build(root, definition);
    assert.equal(first.requests.length, 1);
    assert.equal(first.cached, false);
    const again = await build(root, definition);
    assert.equal(again.requests.length, 0, 'no request at all');
    assert.equal(again.cached, true);

    const wrong = sha256('something else');
    const b2 = new DefinitionBuilder();
    await assert.rejects(build(newRoot(), b2.build(b2.http('pinned', `${server.origin}/pinned.bin`, { checksum: wrong }))), (err: unknown) => {
      assert.ok(err instanceof KilnError);
      assert.equal(err.code, 'E_HTTP_SOURCE');
      assert.equal(err.op, 'pinned');
      assert.equal(err.field, 'ops.pinned.source.attrs["http.checksum"]');
      assert.ok(err.message.includes(wrong) && err.message.includes(sha256(body)), err.message);
      return true;
    });
  });

  it('without a checksum: the second build sends a conditional request, downloads nothing and is cached; a changed file reruns', async () => {
    const root = newRoot();
    server.set('/data.txt', { body: 'version 1\n' });
    const b = new DefinitionBuilder();
    const definition = b.build(b.http('data', `${server.origin}/data.txt`));
    const first = await build(root, definition);
    assert.equal(first.contents.get('data.txt'), 'version 1\n');
    assert.equal(first.bytes, 'version 1\n'.length);

    const second = await build(root, definition);
    assert.equal(second.requests.length, 1);
    assert.equal(second.requests[0]?.status, 304);
    assert.ok(second.requests[0]?.headers['if-none-match'] !== undefined);
    assert.equal(second.bytes, 0, 'nothing downloaded');
    assert.equal(second.cached, true);
    assert.deepEqual(await readdir(join(root, 'tmp')), [], 'no download left in the scratch dir');

    server.set('/data.txt', { body: 'version 2\n', lastModified: new Date('2025-01-01T00:00:00Z') });
    const third = await build(root, definition);
    assert.equal(third.cached, false);
    assert.equal(third.contents.get('data.txt'), 'version 2\n');
    assert.equal(third.requests[0]?.status, 200);

    // Same content at another URL without validators: downloaded (nothing to ask), then a cache hit by content.
    server.set('/copy.txt', { body: 'version 2\n', etag: false, lastModifiedHeader: false });
    const b2 = new DefinitionBuilder();
    const copy = await build(root, b2.build(b2.http('data', `${server.origin}/copy.txt`, { filename: 'data.txt' })));
    assert.equal(copy.cached, true);
    assert.deepEqual(await readdir(join(root, 'tmp')), [], 'the download a cached result did not need is removed');

    // The validators go with prune; the next build downloads again (and is cached by content).
    {
      await using session = await Session.open({ root });
      await session.prune({ all: true });
    }
    const afterPrune = await build(root, definition);
    assert.equal(afterPrune.requests[0]?.status, 200);
    assert.equal(afterPrune.contents.get('data.txt'), 'version 2\n');
  });

  it('--no-cache after a 304 downloads again; a body that changed behind an unchanged Last-Modified is refused, not mixed up', async () => {
    const root = newRoot();
    const lastModified = new Date('2022-02-02T02:02:02Z');
    server.set('/sticky.txt', { body: 'first\n', etag: false, lastModified });
    const b = new DefinitionBuilder();
    const definition = b.build(b.http('sticky', `${server.origin}/sticky.txt`));
    assert.equal((await build(root, definition)).contents.get('sticky.txt'), 'first\n');
    const rerun = await build(root, definition, { noCache: true });
    assert.deepEqual(rerun.requests.map((r) => r.status), [304, 200], 'keyed by the 304, then downloaded to run');
    assert.equal(rerun.cached, false);
    assert.equal(rerun.contents.get('sticky.txt'), 'first\n');

    // The server says "not modified" (same Last-Modified) though the body changed.
    server.set('/sticky.txt', { body: 'second\n', etag: false, lastModified });
    await assert.rejects(build(root, definition, { noCache: true }), (err: unknown) => {
      assert.ok(err instanceof KilnError);
      assert.equal(err.code, 'E_HTTP_SOURCE');
      assert.match(err.message, /changed while this build ran .*build again/);
      return true;
    });
    const next = await build(root, definition);
    assert.equal(next.contents.get('sticky.txt'), 'second\n', 'the stale validators were dropped');
  });

  it('http.authheadersecret: refused before anything runs when not given; sent as Authorization, and nowhere in the root', async () => {
    const secret = `Bearer ${randomBytes(16).toString('hex')}`;
    server.set('/private', { body: 'private data\n' });
    const b = new DefinitionBuilder();
    const definition = b.build(b.http('private', `${server.origin}/private`, { authHeaderSecret: 'token', headers: { 'X-Kiln-Test': 'yes' } }));
    const root = newRoot();
    const before = server.requests.length;
    await assert.rejects(build(root, definition), (err: unknown) => {
      assert.ok(err instanceof MissingGrantError);
      assert.deepEqual(err.grant, { kind: 'secret', id: 'token' });
      assert.equal(err.field, 'ops.private.source.attrs["http.authheadersecret"]');
      return true;
    });
    assert.equal(server.requests.length, before, 'no request was made');

    const built = await build(root, definition, { secrets: { token: Buffer.from(`${secret}\n`) } });
    assert.equal(built.contents.get('private'), 'private data\n');
    assert.equal(built.requests[0]?.headers.authorization, secret, 'the trailing newline of a secret file is dropped');
    assert.equal(built.requests[0]?.headers['x-kiln-test'], 'yes');
    assert.ok(!JSON.stringify(built.events).includes(secret.slice(7)));
    const grep = await execa('grep', ['-r', '-l', '-a', secret.slice(7), root], { reject: false });
    assert.equal(grep.exitCode, 1, `the secret is in ${grep.stdout}`);
    assert.ok((await stat(join(root, 'store'))).isDirectory());
  });
});
