import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ERROR_CODES, KilnError } from '../../../src/errors.js';
import { copyLocal } from '../../../src/source/local/ingest.js';
import type { LocalSelection } from '../../../src/source/local/selection.js';
import { describeTree, type EntryDescription, makeRichTree, tempDir } from '../../support/tree-fixture.js';

const ALL: LocalSelection = { include: [], exclude: [], followPaths: [] };

/** copyEntry keeps times to the microsecond (Node's utimes cannot go finer). */
function toMicros(tree: Map<string, EntryDescription>): Map<string, EntryDescription> {
  return new Map([...tree].map(([rel, e]) => [rel, { ...e, mtimeNs: e.mtimeNs - (e.mtimeNs % 1000n) }]));
}

describe('copyLocal', () => {
  let work: string;
  let src: string;
  let counter = 0;
  const emptyDest = async (): Promise<string> => {
    const dest = path.join(work, `dest-${counter++}`);
    await fs.mkdir(dest);
    return dest;
  };
  before(async () => {
    work = await tempDir();
    src = path.join(work, 'src');
    await fs.mkdir(src);
    await makeRichTree(src);
  });
  after(() => fs.rm(work, { recursive: true, force: true }));

  it('copies every entry with modes, owners, times, xattrs, symlinks, hardlinks and devices', async () => {
    const dest = await emptyDest();
    const result = await copyLocal(src, ALL, dest);
    const expected = await describeTree(src);
    assert.deepEqual(toMicros(await describeTree(dest)), toMicros(expected));
    assert.equal(result.entries, expected.size);
  });

  it('keeps every name of a hardlinked file on one inode while copying in parallel', async () => {
    const dir = path.join(work, 'links');
    await fs.mkdir(dir);
    for (let i = 0; i < 5; i++) {
      await fs.writeFile(path.join(dir, `f${i}-0`), `file ${i}`);
      for (let n = 1; n < 6; n++) await fs.link(path.join(dir, `f${i}-0`), path.join(dir, `f${i}-${n}`));
    }
    const dest = await emptyDest();
    await copyLocal(dir, ALL, dest);
    for (let i = 0; i < 5; i++) {
      const inodes = new Set<bigint>();
      for (let n = 0; n < 6; n++) inodes.add((await fs.stat(path.join(dest, `f${i}-${n}`), { bigint: true })).ino);
      assert.equal(inodes.size, 1, `all names of f${i} share one inode`);
    }
  });

  it('copies only the selection, with the directories that lead to it', async () => {
    const dest = await emptyDest();
    await copyLocal(src, { include: ['a'], exclude: ['a/sub/**', '**/hardlink'], followPaths: [] }, dest);
    assert.deepEqual([...(await describeTree(dest)).keys()], ['a', 'a/file.txt', 'a/sub']);
    const deep = await emptyDest();
    await copyLocal(src, { include: ['a/sub/empty'], exclude: [], followPaths: [] }, deep);
    const copied = await describeTree(deep);
    assert.deepEqual([...copied.keys()], ['a', 'a/sub', 'a/sub/empty']);
    // A directory taken only because it leads somewhere still has its own metadata.
    assert.deepEqual(toMicros(copied).get('a'), toMicros(await describeTree(src)).get('a'));
  });

  it('copies a followed symlink and its target', async () => {
    const dest = await emptyDest();
    await copyLocal(src, { include: ['link'], exclude: [], followPaths: ['link'] }, dest);
    assert.deepEqual([...(await describeTree(dest)).keys()], ['a', 'a/file.txt', 'link']);
    assert.equal(await fs.readFile(path.join(dest, 'link'), 'utf8'), 'hello kiln\n');
  });

  it('names the source and the directory when the directory is missing', async () => {
    const missing = path.join(work, 'missing');
    await assert.rejects(
      copyLocal(missing, ALL, await emptyDest(), { name: 'ctx' }),
      (err: unknown) => err instanceof KilnError && err.code === ERROR_CODES.LOCAL_SOURCE && err.message.includes(`"ctx" (${missing})`),
    );
  });

  it('fails naming the entry when the destination is not empty', async () => {
    const dest = await emptyDest();
    await fs.writeFile(path.join(dest, 'big.bin'), 'in the way');
    await assert.rejects(
      copyLocal(src, ALL, dest),
      (err: unknown) => err instanceof KilnError && err.code === ERROR_CODES.LOCAL_SOURCE && err.message.includes(path.join(dest, 'big.bin')),
    );
  });

  it('rejects with the abort reason when cancelled', async () => {
    const reason = new Error('cancelled by test');
    await assert.rejects(copyLocal(src, ALL, await emptyDest(), { signal: AbortSignal.abort(reason) }), (err: unknown) => err === reason);
  });
});
