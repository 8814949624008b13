import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { digestOf } from '../../../src/digest.js';
import { ERROR_CODES, KilnError } from '../../../src/errors.js';
import { createPathFilter, literalPaths } from '../../../src/fs/patterns.js';
import { beginTreeListing, takeTreeListing, treeListing } from '../../../src/fs/tree-stamp.js';
import { parseAnyDefinition } from '../../../src/llb/formats.js';
import { beginLocalListings, checksumLocal, type FileHashCache, type HashedBytes, indexRecords, type LocalHashIndex, type LocalTreeStamp } from '../../../src/source/local/checksum.js';
import { patternSelectionFilter } from '../../../src/source/local/selected-entries.js';
import type { LocalSelection } from '../../../src/source/local/selection.js';
import { setTime, tempDir } from '../../support/tree-fixture.js';

const ALL: LocalSelection = { include: [], exclude: [], followPaths: [] };

/** An index store that, like kiln's, keeps a serialized copy, and tree stamps unless told not to. */
class MemoryHashCache implements FileHashCache {
  readonly indexes = new Map<string, LocalHashIndex>();
  readonly stamps = new Map<string, LocalTreeStamp>();
  puts = 0;
  readonly getStamp: ((key: string) => LocalTreeStamp | undefined) | undefined;
  readonly putStamp: ((key: string, stamp: LocalTreeStamp) => void) | undefined;
  constructor(stamps = true) {
    this.getStamp = stamps ? (key) => this.stamps.get(key) : undefined;
    this.putStamp = stamps ? (key, stamp) => void this.stamps.set(key, stamp) : undefined;
  }
  get(key: string): LocalHashIndex | undefined {
    return this.indexes.get(key);
  }
  async put(key: string, index: LocalHashIndex): Promise<void> {
    this.puts++;
    this.indexes.set(key, index);
  }
  /** The single index stored. */
  only(): ReturnType<typeof indexRecords> {
    assert.equal(this.indexes.size, 1);
    return indexRecords([...this.indexes.values()][0] ?? '');
  }
}

/** Files written longer ago than the checksum's racy window, so that they can be indexed. */
async function settle(): Promise<void> {
  await sleep(150);
}

async function makeContext(root: string): Promise<void> {
  await fs.mkdir(path.join(root, 'a/empty-dir'), { recursive: true });
  await fs.writeFile(path.join(root, 'a/one.txt'), 'one');
  await fs.writeFile(path.join(root, 'a/two.txt'), 'two');
  await fs.writeFile(path.join(root, 'build.log'), 'noise');
  await fs.symlink('a/one.txt', path.join(root, 'link'));
}

describe('checksumLocal', () => {
  let work: string;
  let counter = 0;
  /** A fresh copy of the test context. */
  const context = async (): Promise<string> => {
    const dir = path.join(work, `ctx-${counter++}`);
    await fs.mkdir(dir);
    await makeContext(dir);
    return dir;
  };
  before(async () => {
    work = await tempDir();
  });
  after(() => fs.rm(work, { recursive: true, force: true }));

  it('counts the selected files and their bytes', async () => {
    const sum = await checksumLocal(await context(), ALL);
    assert.equal(sum.files, 3);
    assert.equal(sum.bytes, 11n);
    assert.match(sum.digest, /^sha256:[0-9a-f]{64}$/);
  });

  it('ignores mtimes: touching files and dirs keeps the checksum', async () => {
    const dir = await context();
    const base = (await checksumLocal(dir, ALL)).digest;
    await setTime(path.join(dir, 'a/one.txt'), 1_500_000_000, 1);
    await setTime(path.join(dir, 'a'), 1_500_000_000, 2);
    await setTime(path.join(dir, 'link'), 1_500_000_000, 3);
    assert.equal((await checksumLocal(dir, ALL)).digest, base);
  });

  it('is the same for two directories with the same content', async () => {
    assert.equal((await checksumLocal(await context(), ALL)).digest, (await checksumLocal(await context(), ALL)).digest);
  });

  const changes: Record<string, (dir: string) => Promise<void>> = {
    'content (same size)': (dir) => fs.writeFile(path.join(dir, 'a/one.txt'), 'ONE'),
    mode: (dir) => fs.chmod(path.join(dir, 'a/one.txt'), 0o600),
    'setuid bit': (dir) => fs.chmod(path.join(dir, 'a/one.txt'), 0o4644),
    owner: (dir) => fs.chown(path.join(dir, 'a/two.txt'), 1000, 1000),
    'directory mode': (dir) => fs.chmod(path.join(dir, 'a/empty-dir'), 0o700),
    rename: (dir) => fs.rename(path.join(dir, 'a/two.txt'), path.join(dir, 'a/three.txt')),
    'added file': (dir) => fs.writeFile(path.join(dir, 'a/new.txt'), ''),
    'added empty dir': (dir) => fs.mkdir(path.join(dir, 'new-dir')),
    'deleted file': (dir) => fs.rm(path.join(dir, 'a/two.txt')),
    'symlink target': async (dir) => {
      await fs.rm(path.join(dir, 'link'));
      await fs.symlink('a/two.txt', path.join(dir, 'link'));
    },
    'file replaced by a symlink': async (dir) => {
      await fs.rm(path.join(dir, 'build.log'));
      await fs.symlink('noise', path.join(dir, 'build.log'));
    },
  };
  for (const [what, change] of Object.entries(changes)) {
    it(`changes with the ${what}`, async () => {
      const dir = await context();
      await settle();
      const cache = new MemoryHashCache();
      const base = (await checksumLocal(dir, ALL, { hashCache: cache })).digest;
      assert.equal(cache.stamps.size, 1, 'a settled tree is stamped');
      await change(dir);
      // With the index and the stamp in place too: a change must never be hidden by a fast path.
      assert.notEqual((await checksumLocal(dir, ALL, { hashCache: cache })).digest, base);
      assert.notEqual((await checksumLocal(dir, ALL)).digest, base);
    });
  }

  it('does not read an unchanged file again once it is indexed', async () => {
    const dir = await context();
    await settle();
    const cache = new MemoryHashCache();
    const first = await checksumLocal(dir, ALL, { hashCache: cache });
    assert.equal(first.hashed, 3);
    assert.equal(cache.only().length, 3);

    const second = await checksumLocal(dir, ALL, { hashCache: cache });
    assert.deepEqual([second.digest, second.hashed], [first.digest, 0]);
    assert.equal(cache.puts, 1, 'an unchanged index is not written again');

    await fs.writeFile(path.join(dir, 'a/two.txt'), 'TWO');
    const third = await checksumLocal(dir, ALL, { hashCache: cache });
    assert.equal(third.hashed, 1);
    assert.equal(third.digest, (await checksumLocal(dir, ALL)).digest);
  });

  it('takes a changed tree from the listing that stamped it: the same digest, index, import log and file list as a walk', async () => {
    const dir = await context();
    // Names whose order differs between whole paths and the walk's (a '-' sorts before '/'), non-ASCII, and odd modes.
    await fs.mkdir(path.join(dir, 'a-c/deep/er'), { recursive: true });
    await fs.writeFile(path.join(dir, 'a-c/deep/er/x'), 'x');
    await fs.writeFile(path.join(dir, 'a.b'), 'dot');
    await fs.writeFile(path.join(dir, 'a/ünïcödé 名前'), 'u');
    await fs.writeFile(path.join(dir, 'a/setuid'), 's', { mode: 0o4755 });
    await fs.chmod(path.join(dir, 'a/setuid'), 0o4755);
    await fs.symlink('../nowhere', path.join(dir, 'a-c/dangling'));
    await fs.chown(path.join(dir, 'a.b'), 1234, 5678);
    await settle();
    const cache = new MemoryHashCache();
    await checksumLocal(dir, ALL, { hashCache: cache });
    assert.equal(cache.stamps.size, 1, 'the first run keeps a stamp');
    await fs.writeFile(path.join(dir, 'a-c/deep/er/x'), 'changed');
    await fs.mkdir(path.join(dir, 'a-c/new'));
    await settle();
    const listed = await checksumLocal(dir, ALL, { hashCache: cache });
    const walked = await checksumLocal(dir, ALL, { hashCache: new MemoryHashCache(false) });
    assert.equal(listed.digest, walked.digest);
    assert.equal(listed.importLog?.(), walked.importLog?.());
    assert.deepEqual(listed.fileSignature(), walked.fileSignature());
    assert.equal(listed.hashed, 1);
  });

  it('takes a listing begun early once, for the selection it was begun for', async () => {
    const dir = await context();
    await settle();
    const cache = new MemoryHashCache();
    const first = await checksumLocal(dir, ALL, { hashCache: cache });
    beginTreeListing(dir);
    const unchanged = await checksumLocal(dir, ALL, { hashCache: cache });
    assert.deepEqual([unchanged.digest, unchanged.importLog], [first.digest, undefined]);
    assert.equal(takeTreeListing(dir), undefined, 'the checksum took it');

    await fs.writeFile(path.join(dir, 'a/two.txt'), 'two, changed');
    await settle();
    beginTreeListing(dir);
    const changed = await checksumLocal(dir, ALL, { hashCache: cache });
    assert.deepEqual([changed.digest, changed.hashed], [(await checksumLocal(dir, ALL)).digest, 1]);

    // A filtered selection does not take a whole tree's listing: it walks (and stamps) on its own.
    const onlyA: LocalSelection = { include: ['a'], exclude: [], followPaths: [] };
    await fs.writeFile(path.join(dir, 'build.log'), 'more noise');
    beginTreeListing(dir);
    assert.equal((await checksumLocal(dir, onlyA, { hashCache: cache })).digest, (await checksumLocal(dir, onlyA)).digest);

    // One begun under its own filter, it takes.
    const filter = patternSelectionFilter(onlyA);
    assert.ok(filter !== undefined);
    await fs.writeFile(path.join(dir, 'a/two.txt'), 'two, changed again');
    await settle();
    beginTreeListing(dir, { key: digestOf(onlyA), filter });
    const filtered = await checksumLocal(dir, onlyA, { hashCache: cache });
    assert.equal(takeTreeListing(dir, digestOf(onlyA)), undefined, 'the checksum took it');
    assert.deepEqual([filtered.digest, filtered.hashed], [(await checksumLocal(dir, onlyA)).digest, 1]);
    beginTreeListing(dir, { key: digestOf(onlyA), filter });
    const again = await checksumLocal(dir, onlyA, { hashCache: cache });
    assert.deepEqual([again.digest, again.importLog], [filtered.digest, undefined], 'the stamp of the early listing matched');
  });

  it('begins listings for the local sources of a definition, whole or under their patterns, not those with followed paths', async () => {
    const whole = await context();
    const filtered = await context();
    const followed = await context();
    const unused = await context();
    const json = {
      version: 1,
      ops: {
        w: { source: { identifier: 'local://whole' } },
        f: { source: { identifier: 'local://filtered', attrs: { 'local.includepattern': '["a"]' } } },
        l: { source: { identifier: 'local://followed', attrs: { 'local.followpaths': '["a"]' } } },
        m: { merge: { inputs: [0, 1, 2] }, inputs: ['w', 'f', 'l'] },
      },
      result: 'm',
    };
    beginLocalListings(parseAnyDefinition(Buffer.from(JSON.stringify(json))), { whole, filtered, followed, unused });
    assert.notEqual(takeTreeListing(whole), undefined);
    assert.equal(takeTreeListing(filtered), undefined, 'not as a whole tree');
    assert.notEqual(takeTreeListing(filtered, digestOf({ include: ['a'], exclude: [], followPaths: [] })), undefined);
    assert.equal(takeTreeListing(followed), undefined);
    assert.equal(takeTreeListing(followed, digestOf({ include: [], exclude: [], followPaths: ['a'] })), undefined);
    assert.equal(takeTreeListing(unused), undefined);
  });

  it('re-reads only a file changed in the middle, keeps the index in walk order, and lists files as a fresh walk does', async () => {
    const dir = await context();
    await settle();
    const cache = new MemoryHashCache(false);
    await checksumLocal(dir, ALL, { hashCache: cache });
    const paths = cache.only().map(([rel]) => rel);
    await fs.writeFile(path.join(dir, 'a/one.txt'), 'ONE, longer');
    await settle();
    const changed = await checksumLocal(dir, ALL, { hashCache: cache });
    const fresh = await checksumLocal(dir, ALL);
    assert.deepEqual([changed.hashed, changed.digest], [1, fresh.digest]);
    assert.deepEqual(changed.fileSignature(), fresh.fileSignature());
    assert.ok(typeof changed.fileSignature() === 'string' && (changed.fileSignature() as string).startsWith('a\0dir:'));
    assert.deepEqual(cache.only().map(([rel]) => rel), paths);
    assert.equal((await checksumLocal(dir, ALL, { hashCache: cache })).hashed, 0);
  });

  it('hashes each file whole, read in one call when small and streamed when big', async () => {
    const dir = await tempDir();
    const sizes = [0, 1, 4095, 65535, 65536, 65537, 300_001];
    const contents = new Map<string, Buffer>();
    for (const size of sizes) {
      const content = Buffer.alloc(size);
      for (let i = 0; i < size; i++) content[i] = (i * 31 + size) & 0xff;
      contents.set(`f${size}`, content);
      await fs.writeFile(path.join(dir, `f${size}`), content);
    }
    await settle();
    const cache = new MemoryHashCache(false);
    const sum = await checksumLocal(dir, ALL, { hashCache: cache });
    assert.equal(sum.hashed, sizes.length);
    const hashes = new Map(cache.only().map(([rel, , sha]) => [rel, sha]));
    for (const [rel, content] of contents) assert.equal(hashes.get(rel), createHash('sha256').update(content).digest('hex'), rel);
  });

  it('takes content hashes from the index without reading the files', async () => {
    const dir = await context();
    await settle();
    // Without stamps: an unchanged tree's stamp would skip the index altogether.
    const cache = new MemoryHashCache(false);
    const truth = await checksumLocal(dir, ALL, { hashCache: cache });
    // Corrupt one stored hash: the fast path trusts it, which proves the file was not read.
    const [key, index] = [...cache.indexes][0] ?? assert.fail('no index stored');
    const corrupted = indexRecords(index).map(([rel, identity, sha]) => `${rel}\0${identity}\0${rel === 'a/one.txt' ? '0'.repeat(64) : sha}\0`);
    cache.indexes.set(key, corrupted.join(''));
    const fromIndex = await checksumLocal(dir, ALL, { hashCache: cache });
    assert.equal(fromIndex.hashed, 0);
    assert.notEqual(fromIndex.digest, truth.digest);
    // Any write moves the ctime, so the stale record is not used any more.
    await fs.chmod(path.join(dir, 'a/one.txt'), 0o644);
    assert.equal((await checksumLocal(dir, ALL, { hashCache: cache })).digest, truth.digest);
  });

  it('does not index files changed just before it ran (their ctime could repeat)', async () => {
    const dir = await context();
    const cache = new MemoryHashCache();
    await checksumLocal(dir, ALL, { hashCache: cache });
    assert.deepEqual(cache.only(), []);
    assert.equal(cache.stamps.size, 0, 'nor is the tree stamped');
    assert.equal((await checksumLocal(dir, ALL, { hashCache: cache })).hashed, 3);
  });

  it('skips the walk of a tree whose stamp is unchanged, and walks again after any change', async () => {
    const dir = await context();
    await fs.mkdir(path.join(dir, 'logs'));
    await fs.writeFile(path.join(dir, 'logs/x.log'), 'x');
    await settle();
    const noLogs: LocalSelection = { include: [], exclude: ['logs', '*.log'], followPaths: [] };
    const cache = new MemoryHashCache();
    const first = await checksumLocal(dir, noLogs, { hashCache: cache });
    assert.ok(first.importLog !== undefined);
    const again = await checksumLocal(dir, noLogs, { hashCache: cache });
    assert.deepEqual([again.digest, again.files, again.bytes, again.importLog], [first.digest, first.files, first.bytes, undefined]);
    // An excluded directory is not even looked at by the stamp: writing in it keeps it.
    await fs.writeFile(path.join(dir, 'logs/y.log'), 'y');
    assert.equal((await checksumLocal(dir, noLogs, { hashCache: cache })).importLog, undefined);
    // Another excluded file moves the stamp (the walk then finds the same digest).
    await fs.writeFile(path.join(dir, 'other.log'), 'z');
    const walked = await checksumLocal(dir, noLogs, { hashCache: cache });
    assert.ok(walked.importLog !== undefined);
    assert.equal(walked.digest, first.digest);
    // A touched file (same content, new mtime) is walked again and keeps the digest.
    await settle();
    await checksumLocal(dir, noLogs, { hashCache: cache });
    await fs.utimes(path.join(dir, 'a/one.txt'), new Date(), new Date(2000, 1, 1));
    const touched = await checksumLocal(dir, noLogs, { hashCache: cache });
    assert.ok(touched.importLog !== undefined);
    assert.equal(touched.digest, first.digest);
  });

  it('stamps a selection of plain paths from their lstat, and walks again after any change to them or the directories leading to them', async () => {
    const dir = await context();
    await settle();
    const plain: LocalSelection = { include: ['a/one.txt', 'missing/x'], exclude: [], followPaths: [] };
    const literal = literalPaths(plain.include);
    assert.deepEqual(literal, ['a/one.txt', 'missing/x']);
    const stamp = async (): Promise<string | undefined> => (await treeListing(dir, { filter: createPathFilter({ include: plain.include }), literal }))?.stamp;
    const first = await stamp();
    assert.ok(first !== undefined);
    // Anything else in the tree is not looked at.
    await fs.writeFile(path.join(dir, 'a/two.txt'), 'two, changed');
    await fs.writeFile(path.join(dir, 'build.log'), 'more noise');
    assert.equal(await stamp(), first);
    const cache = new MemoryHashCache();
    const before = await checksumLocal(dir, plain, { hashCache: cache });
    const again = await checksumLocal(dir, plain, { hashCache: cache });
    assert.deepEqual([again.digest, again.importLog], [before.digest, undefined], 'unchanged: not walked');
    for (const change of [
      () => fs.writeFile(path.join(dir, 'a/one.txt'), 'one, changed'),
      () => fs.chmod(path.join(dir, 'a'), 0o700),
      () => fs.mkdir(path.join(dir, 'missing')),
      () => fs.writeFile(path.join(dir, 'missing/x'), 'x'),
    ]) {
      const was = await stamp();
      await change();
      assert.notEqual(await stamp(), was, change.toString());
      const changed = await checksumLocal(dir, plain, { hashCache: cache });
      assert.ok(changed.importLog !== undefined, 'walked');
      assert.equal(changed.digest, (await checksumLocal(dir, plain)).digest);
    }
    // A named path that is a directory selects its whole tree: find lists it.
    const whole = await treeListing(dir, { filter: createPathFilter({ include: ['a'] }), literal: ['a'] });
    assert.equal(whole?.stamp, (await treeListing(dir, { filter: createPathFilter({ include: ['a'] }) }))?.stamp);
  });

  it('keeps one index per selection of the same directory', async () => {
    const dir = await context();
    await settle();
    const cache = new MemoryHashCache();
    const onlyA: LocalSelection = { include: ['a'], exclude: [], followPaths: [] };
    await checksumLocal(dir, ALL, { hashCache: cache });
    await checksumLocal(dir, onlyA, { hashCache: cache });
    assert.equal(cache.indexes.size, 2);
    assert.equal((await checksumLocal(dir, ALL, { hashCache: cache })).hashed, 0);
    assert.equal((await checksumLocal(dir, onlyA, { hashCache: cache })).hashed, 0);
  });

  it('covers only what include and exclude patterns select', async () => {
    const dir = await context();
    const noLogs: LocalSelection = { include: [], exclude: ['*.log'], followPaths: [] };
    const onlyA: LocalSelection = { include: ['a'], exclude: [], followPaths: [] };
    const base = await Promise.all([checksumLocal(dir, noLogs), checksumLocal(dir, onlyA)]);
    assert.deepEqual(base.map((s) => s.files), [2, 2]);
    await fs.writeFile(path.join(dir, 'build.log'), 'other noise');
    await fs.writeFile(path.join(dir, 'link-target-elsewhere'), 'outside a');
    assert.equal((await checksumLocal(dir, noLogs)).files, 3);
    assert.equal((await checksumLocal(dir, onlyA)).digest, base[1]?.digest);
    await fs.writeFile(path.join(dir, 'a/one.txt'), 'changed');
    assert.notEqual((await checksumLocal(dir, onlyA)).digest, base[1]?.digest);
  });

  it('follows symlinks at followpaths to their target inside the directory', async () => {
    const dir = path.join(work, 'follow');
    await fs.mkdir(path.join(dir, 'docker'), { recursive: true });
    await fs.writeFile(path.join(dir, 'docker/Dockerfile.real'), 'FROM scratch\n');
    await fs.symlink('docker/Dockerfile.real', path.join(dir, 'Dockerfile'));
    await fs.symlink('/Dockerfile', path.join(dir, 'absolute'));
    const linkOnly: LocalSelection = { include: ['Dockerfile'], exclude: [], followPaths: [] };
    const followed: LocalSelection = { include: ['Dockerfile'], exclude: [], followPaths: ['Dockerfile'] };
    const base = await Promise.all([checksumLocal(dir, linkOnly), checksumLocal(dir, followed)]);
    assert.deepEqual(base.map((s) => s.files), [0, 1]);
    await fs.writeFile(path.join(dir, 'docker/Dockerfile.real'), 'FROM busybox\n');
    assert.equal((await checksumLocal(dir, linkOnly)).digest, base[0]?.digest);
    assert.notEqual((await checksumLocal(dir, followed)).digest, base[1]?.digest);
    // An absolute target resolves inside the directory (here: through /Dockerfile to docker/), never on the host.
    const viaAbsolute = await checksumLocal(dir, { include: [], exclude: [], followPaths: ['absolute'] });
    assert.equal(viaAbsolute.files, 1);
  });

  it('reports progress, ending with the total, in files and in bytes', async () => {
    const calls: [number, number | undefined, HashedBytes | undefined][] = [];
    const sum = await checksumLocal(await context(), ALL, { onProgress: (done, total, bytes) => calls.push([done, total, bytes]) });
    assert.deepEqual(calls.at(-1), [3, 3, { done: Number(sum.bytes), total: Number(sum.bytes) }]);
  });

  it('names the source and the directory when the directory is missing or not one', async () => {
    const missing = path.join(work, 'missing');
    await assert.rejects(
      checksumLocal(missing, ALL, { name: 'context' }),
      (err: unknown) => err instanceof KilnError && err.code === ERROR_CODES.LOCAL_SOURCE && err.message === `local source "context" (${missing}): the directory does not exist`,
    );
    const file = path.join(work, 'a-file');
    await fs.writeFile(file, '');
    await assert.rejects(
      checksumLocal(file, ALL),
      (err: unknown) => err instanceof KilnError && err.code === ERROR_CODES.LOCAL_SOURCE && err.message === `local directory ${file}: not a directory`,
    );
  });

  it('names the file it cannot read', async () => {
    const dir = await context();
    const secret = path.join(dir, 'a/one.txt');
    await fs.chmod(secret, 0o000);
    // Root reads anything; without these two capabilities, file modes apply to it too.
    const moduleUrl = new URL('../../../src/source/local/checksum.js', import.meta.url).href;
    const script = `import(${JSON.stringify(moduleUrl)}).then((m) => m.checksumLocal(${JSON.stringify(dir)}, { include: [], exclude: [], followPaths: [] }, { name: 'ctx' }))
      .then(() => console.log('{}'), (err) => console.log(JSON.stringify({ code: err.code, message: err.message })))`;
    const { stdout } = await execa('setpriv', ['--bounding-set', '-dac_override,-dac_read_search', process.execPath, '--input-type=module', '-e', script]);
    const { code, message } = JSON.parse(stdout) as { code?: string; message?: string };
    assert.equal(code, ERROR_CODES.LOCAL_SOURCE);
    assert.match(message ?? '', new RegExp(`^local source "ctx" \\(${dir}\\): cannot read ${secret}: EACCES`));
  });

  it('rejects with the abort reason when cancelled', async () => {
    const reason = new Error('cancelled by test');
    await assert.rejects(checksumLocal(await context(), ALL, { signal: AbortSignal.abort(reason) }), (err: unknown) => err === reason);
  });
});
