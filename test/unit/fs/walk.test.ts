import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createPathFilter } from '../../../src/fs/patterns.js';
import type { WalkOptions } from '../../../src/fs/walk.js';
import { walkTree, walkTreeBatches } from '../../../src/fs/walk.js';

async function rels(root: string, options?: WalkOptions): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of walkTree(root, options)) out.push(entry.rel);
  return out;
}

describe('walkTree', () => {
  let base: string;
  let root: string;

  before(async () => {
    base = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-walk-'));
    root = path.join(base, 'root');
    await fs.mkdir(path.join(root, 'a/b'), { recursive: true });
    await fs.mkdir(path.join(root, 'node_modules/x'), { recursive: true });
    await fs.mkdir(path.join(base, 'outside'));
    await fs.writeFile(path.join(base, 'outside/secret'), 's');
    for (const f of ['B', 'a.b', 'a-b', 'é', 'Z', 'a/b/c.go', 'a/b/d.txt', 'a/top.go', 'node_modules/x/i.js']) {
      await fs.writeFile(path.join(root, f), f);
    }
    // A link to a directory outside the root: listed, never entered.
    await fs.symlink(path.join(base, 'outside'), path.join(root, 'out'));
  });
  after(async () => fs.rm(base, { recursive: true, force: true }));

  it('yields parents before children, names in byte order, never following links', async () => {
    assert.deepEqual(await rels(root), [
      'B',
      'Z',
      'a',
      'a/b',
      'a/b/c.go',
      'a/b/d.txt',
      'a/top.go',
      'a-b',
      'a.b',
      'node_modules',
      'node_modules/x',
      'node_modules/x/i.js',
      'out',
      'é',
    ]);
  });

  it('gives host paths and lstat stats', async () => {
    for await (const entry of walkTree(root)) {
      assert.equal(entry.path, path.join(root, entry.rel));
      if (entry.rel === 'out') assert.ok(entry.stats.isSymbolicLink());
      if (entry.rel === 'a') assert.ok(entry.stats.isDirectory());
    }
  });

  it('skips excluded subtrees', async () => {
    const filter = createPathFilter({ exclude: ['node_modules', '*.b', 'a/b/*.txt'] });
    assert.deepEqual(await rels(root, { filter }), ['B', 'Z', 'a', 'a/b', 'a/b/c.go', 'a/top.go', 'a-b', 'out', 'é']);
  });

  it('emits leading directories only when something below them is selected', async () => {
    const filter = createPathFilter({ include: ['**/*.go', 'node_modules/nothing'] });
    assert.deepEqual(await rels(root, { filter }), ['a', 'a/b', 'a/b/c.go', 'a/top.go']);
  });

  it('re-includes exceptions under an excluded directory, with their parents', async () => {
    const filter = createPathFilter({ exclude: ['a', '!a/b/d.txt'] });
    const got = await rels(root, { filter });
    assert.deepEqual(
      got.filter((r) => r.startsWith('a/') || r === 'a'),
      ['a', 'a/b', 'a/b/d.txt'],
    );
  });

  it('stops when the signal is aborted', async () => {
    const controller = new AbortController();
    const reason = new Error('stop');
    const seen: string[] = [];
    await assert.rejects(async () => {
      for await (const entry of walkTree(root, { signal: controller.signal })) {
        seen.push(entry.rel);
        controller.abort(reason);
      }
    }, reason);
    assert.deepEqual(seen, ['B']);
  });

  it('orders names by their UTF-8 bytes where UTF-16 order differs, and batches a big folder', async () => {
    const dir = path.join(base, 'names');
    await fs.mkdir(dir);
    // UTF-8 order: z (7a) < U+FFFD (ef bf bd) < U+1F600 (f0 9f 98 80); UTF-16 puts the emoji's surrogate (d83d) before U+FFFD.
    const names = ['\u{1F600}', '\uFFFD', 'z', ...Array.from({ length: 600 }, (_, i) => `n${String(i).padStart(3, '0')}`)];
    for (const name of names) await fs.writeFile(path.join(dir, name), '');
    const batches: string[][] = [];
    for await (const batch of walkTreeBatches(dir)) batches.push(batch.map((e) => e.rel));
    assert.ok(batches.length > 1 && batches.every((b) => b.length > 0 && b.length <= 256));
    const flat = batches.flat();
    assert.deepEqual(flat.slice(-3), ['z', '\uFFFD', '\u{1F600}']);
    assert.deepEqual(flat, await rels(dir));
  });
});
