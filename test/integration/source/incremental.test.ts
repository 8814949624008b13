/**
 * Incremental import of a local source: a changed source's new snapshot is
 * the last import's with only the changes written over it, and holds exactly
 * what a full copy would (modes, owners, times, symlinks, the selection).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createCacheManager } from '../../../src/cache/manager.js';
import type { ImmutableRef } from '../../../src/cache/types.js';
import type { CacheKey } from '../../../src/digest.js';
import { checksumLocal } from '../../../src/source/local/checksum.js';
import { type ImportedLocal, importLocal, type ImportLocalOptions } from '../../../src/source/local/import.js';
import type { LocalImportRecord } from '../../../src/source/local/incremental.js';
import { updateLocal } from '../../../src/source/local/incremental.js';
import { copyLocal } from '../../../src/source/local/ingest.js';
import type { LocalSelection } from '../../../src/source/local/selection.js';
import { describeTree, type EntryDescription, makeRichTree, tempDir } from '../../support/tree-fixture.js';

const ALL: LocalSelection = { include: [], exclude: [], followPaths: [] };

/** Copies keep times to the microsecond (Node's utimes cannot go finer). */
function toMicros(tree: Map<string, EntryDescription>): Map<string, EntryDescription> {
  return new Map([...tree].map(([rel, e]) => [rel, { ...e, mtimeNs: e.mtimeNs - (e.mtimeNs % 1000n) }]));
}

/** The source's entries as the walk that keys it logs them. */
async function logOf(src: string, selection: LocalSelection = ALL): Promise<string> {
  return (await checksumLocal(src, selection)).importLog?.() ?? assert.fail('the checksum walked nothing');
}

/** Past the racy window: entries written before this are trusted by their stat. */
async function settle(): Promise<void> {
  await sleep(150);
}

async function inode(file: string): Promise<bigint> {
  return (await fs.lstat(file, { bigint: true })).ino;
}

/** One file changed, one deleted, one added, a file turned into a directory, a mode changed, a symlink retargeted, a folder removed. */
async function change(src: string): Promise<void> {
  await fs.writeFile(path.join(src, 'plain.txt'), 'changed content\n');
  await fs.rm(path.join(src, 'empty'));
  await fs.writeFile(path.join(src, 'a/added.txt'), 'new file\n');
  await fs.rm(path.join(src, 'turns-dir'));
  await fs.mkdir(path.join(src, 'turns-dir'));
  await fs.writeFile(path.join(src, 'turns-dir/inside'), 'inside\n');
  await fs.chmod(path.join(src, 'a/sub/mode.sh'), 0o700);
  await fs.rm(path.join(src, 'retarget'));
  await fs.symlink('a/added.txt', path.join(src, 'retarget'));
  await fs.rm(path.join(src, 'gone'), { recursive: true });
}

/** The rich tree (modes, owners, xattrs, links, devices) and a few entries the change above touches. */
async function makeSource(src: string): Promise<void> {
  await fs.mkdir(src);
  await makeRichTree(src);
  await fs.writeFile(path.join(src, 'plain.txt'), 'plain\n');
  await fs.writeFile(path.join(src, 'empty'), '');
  await fs.mkdir(path.join(src, 'a/sub'), { recursive: true });
  await fs.writeFile(path.join(src, 'a/sub/mode.sh'), 'echo\n', { mode: 0o644 });
  await fs.writeFile(path.join(src, 'a/kept.txt'), 'kept\n');
  await fs.writeFile(path.join(src, 'turns-dir'), 'a file for now\n');
  await fs.symlink('plain.txt', path.join(src, 'retarget'));
  await fs.mkdir(path.join(src, 'gone/deeper'), { recursive: true });
  await fs.writeFile(path.join(src, 'gone/deeper/f'), 'f\n');
}

describe('updateLocal', () => {
  let work: string;
  let counter = 0;
  before(async () => {
    work = await tempDir();
  });
  after(() => fs.rm(work, { recursive: true, force: true }));

  const fresh = async (): Promise<{ src: string; dest: string }> => {
    const n = counter++;
    const src = path.join(work, `src-${n}`);
    const dest = path.join(work, `dest-${n}`);
    await makeSource(src);
    await fs.mkdir(dest);
    await settle();
    return { src, dest };
  };

  it('writes only what changed and leaves exactly the new tree', async () => {
    const { src, dest } = await fresh();
    const { log } = await copyLocal(src, ALL, dest);
    const keptInode = await inode(path.join(dest, 'a/kept.txt'));
    await change(src);
    await settle();
    const current = await logOf(src);
    const result = await updateLocal(src, dest, log, current);
    assert.ok(result !== null && result !== 'removes');
    assert.deepEqual(toMicros(await describeTree(dest)), toMicros(await describeTree(src)));
    assert.equal(await inode(path.join(dest, 'a/kept.txt')), keptInode, 'an unchanged file is not copied again');
    // plain.txt, a (a new entry moved its times), a/added.txt, a/sub/mode.sh, retarget, turns-dir and turns-dir/inside.
    assert.equal(result.copied, 7);
    // empty, gone, gone/deeper, gone/deeper/f.
    assert.equal(result.removed, 4);

    // That log starts the next update: nothing changed, nothing written.
    const again = await updateLocal(src, dest, current, await logOf(src));
    assert.ok(again !== null && again !== 'removes');
    assert.deepEqual({ copied: again.copied, removed: again.removed }, { copied: 0, removed: 0 });
  });

  it('honours the selection: excluded entries stay out, whatever happens to them', async () => {
    const { src, dest } = await fresh();
    const selection: LocalSelection = { include: [], exclude: ['plain.txt', 'a/added.txt'], followPaths: [] };
    const { log } = await copyLocal(src, selection, dest);
    await change(src);
    await settle();
    const result = await updateLocal(src, dest, log, await logOf(src, selection));
    assert.ok(result !== null && result !== 'removes');
    const expected = await describeTree(src);
    expected.delete('plain.txt');
    expected.delete('a/added.txt');
    assert.deepEqual(toMicros(await describeTree(dest)), toMicros(expected));
  });

  it('leaves a change to a hard-linked file to a full import', async () => {
    const { src, dest } = await fresh();
    await fs.writeFile(path.join(src, 'linked'), 'one\n');
    await fs.link(path.join(src, 'linked'), path.join(src, 'linked-too'));
    await settle();
    const { log } = await copyLocal(src, ALL, dest);
    await fs.writeFile(path.join(src, 'linked'), 'two\n');
    assert.equal(await updateLocal(src, dest, log, await logOf(src)), null);
  });

  it('copies again what changed within the racy window of the last import', async () => {
    const { src, dest } = await fresh();
    await fs.writeFile(path.join(src, 'just-now'), 'one\n');
    const { log } = await copyLocal(src, ALL, dest);
    await settle();
    const result = await updateLocal(src, dest, log, await logOf(src));
    assert.ok(result !== null && result !== 'removes');
    assert.equal(result.copied, 1);
  });
});

describe('importLocal over the cache manager', () => {
  /** A cache on `snapshotter`, the rich source imported once in full and saved under `key`; everything removed after `body`. */
  async function withFirstImport(
    snapshotter: 'overlayfs' | 'native',
    body: (setup: { src: string; base: ImportLocalOptions; first: ImportedLocal; key: CacheKey; refs: ImmutableRef[] }) => Promise<void>,
  ): Promise<void> {
    const work = await tempDir();
    const cache = await createCacheManager({ root: path.join(work, 'root'), snapshotter });
    const refs: ImmutableRef[] = [];
    try {
      const src = path.join(work, 'src');
      await makeSource(src);
      await settle();
      const base = { cache, dir: src, selection: ALL, description: 'local://src', signal: new AbortController().signal };
      const first = await importLocal(base);
      refs.push(first.ref);
      const key = `sha256:${'1'.repeat(64)}` as CacheKey;
      await cache.save(key, [first.ref], { description: 'local://src' });
      await body({ src, base, first, key, refs });
    } finally {
      for (const ref of refs) await ref.release();
      await cache.close();
      await fs.rm(work, { recursive: true, force: true });
    }
  }

  for (const snapshotter of ['overlayfs', 'native'] as const) {
    it(`on ${snapshotter}: a changed source is its last snapshot plus the changes`, async () => {
      await withFirstImport(snapshotter, async ({ src, base, first, key, refs }) => {
        assert.equal(first.incremental, false);
        const previous: LocalImportRecord = { key, entries: first.entries, depth: first.depth, usedAt: Date.now() };

        await change(src);
        await settle();
        const current = await logOf(src);
        const second = await importLocal({ ...base, previous, current: () => current });
        refs.push(second.ref);
        assert.equal(second.incremental, true);
        assert.equal(second.depth, 1);
        {
          await using mounted = await second.ref.mount();
          assert.deepEqual(toMicros(await describeTree(mounted.path)), toMicros(await describeTree(src)));
        }
        // The first snapshot is untouched by the second.
        {
          await using mounted = await first.ref.mount();
          assert.equal(await fs.readFile(path.join(mounted.path, 'plain.txt'), 'utf8'), 'plain\n');
          assert.equal((await fs.lstat(path.join(mounted.path, 'empty'))).isFile(), true);
        }

        // A previous import whose result is no longer cached: a full copy.
        const gone = await importLocal({ ...base, previous: { ...previous, key: `sha256:${'2'.repeat(64)}` }, current: () => current });
        refs.push(gone.ref);
        assert.equal(gone.incremental, false);
      });
    });
  }

  it('on overlayfs: changes that remove nothing go straight into the new upper layer, with the directories they need', async () => {
    await withFirstImport('overlayfs', async ({ src, base, first, key, refs }) => {
      // A deep file rewritten, a file added in new nested folders, a mode changed, a symlink retargeted, a file turned into a folder.
      await fs.writeFile(path.join(src, 'a/sub/mode.sh'), 'rewritten\n');
      await fs.mkdir(path.join(src, 'a/new/deeper'), { recursive: true });
      await fs.writeFile(path.join(src, 'a/new/deeper/f'), 'f\n');
      await fs.chmod(path.join(src, 'plain.txt'), 0o600);
      await fs.rm(path.join(src, 'retarget'));
      await fs.symlink('plain.txt', path.join(src, 'retarget'));
      await fs.rm(path.join(src, 'turns-dir'));
      await fs.mkdir(path.join(src, 'turns-dir'));
      await settle();
      const current = await logOf(src);
      const second = await importLocal({ ...base, previous: { key, entries: first.entries, depth: 0, usedAt: Date.now() }, current: () => current });
      refs.push(second.ref);
      assert.equal(second.incremental, true);
      {
        await using mounted = await second.ref.mount();
        assert.deepEqual(toMicros(await describeTree(mounted.path)), toMicros(await describeTree(src)));
      }
      // The new layer holds the changes and the folders around them, nothing else.
      const top = (await second.ref.layers()).at(-1)?.content;
      assert.ok(top?.kind === 'overlay-dir');
      const held = (await fs.readdir(top.dir, { recursive: true })).sort();
      assert.deepEqual(held, ['a', 'a/new', 'a/new/deeper', 'a/new/deeper/f', 'a/sub', 'a/sub/mode.sh', 'plain.txt', 'retarget', 'turns-dir']);
    });
  });
});
