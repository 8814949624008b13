import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SYNC_COPY_MAX_BYTES } from '../../../src/fs/metadata.js';
import { TreeCopier } from '../../../src/fs/tree-copier.js';
import { walkTree } from '../../../src/fs/walk.js';

const lstat = (p: string) => fs.lstat(p, { bigint: true });

/** Copies the tree `src` into the new directory `dest` the way the copy op does: directories first, files queued. */
async function copyTree(copier: TreeCopier, src: string, dest: string): Promise<void> {
  await copier.addDirectory(src, dest, await lstat(src));
  for await (const entry of walkTree(src)) {
    const to = path.join(dest, entry.rel);
    if (entry.stats.isDirectory()) await copier.addDirectory(entry.path, to, entry.stats);
    else copier.addFile(entry.path, to, entry.stats);
    await copier.room();
  }
  await copier.finish();
}

describe('TreeCopier', () => {
  let base: string;
  let src: string;
  before(async () => {
    base = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-tree-copier-'));
    src = path.join(base, 'src');
    for (let d = 0; d < 6; d++) {
      await fs.mkdir(path.join(src, `d${d}`, 'sub'), { recursive: true });
      for (let f = 0; f < 100; f++) await fs.writeFile(path.join(src, `d${d}`, f % 2 === 0 ? `f${f}` : `sub/f${f}`), `file ${d} ${f}`);
      await fs.symlink(`../d${d}/f0`, path.join(src, `d${d}`, 'sub', 'up'));
    }
    // Every other directory's first file has a second name elsewhere.
    for (const d of [0, 2, 4]) await fs.link(path.join(src, `d${d}`, 'f0'), path.join(src, 'd1', `link-to-${d}`));
    // Big enough to go through the thread pool rather than a synchronous copy.
    await fs.writeFile(path.join(src, 'd3', 'big'), Buffer.alloc(Number(SYNC_COPY_MAX_BYTES) * 3, 7));
    await fs.chmod(path.join(src, 'd3', 'big'), 0o751);
    for await (const entry of walkTree(src)) {
      await fs.lutimes(entry.path, 1_600_000_000.25, 1_600_000_000 + entry.rel.length / 1000);
    }
  });
  after(async () => fs.rm(base, { recursive: true, force: true }));

  it('copies every entry with its content, mode, links and times, directories timed last', async () => {
    const dest = path.join(base, 'copy');
    await copyTree(new TreeCopier({ concurrency: 4 }), src, dest);
    const copied = new Map<string, bigint>();
    let entries = 0;
    for await (const entry of walkTree(src)) {
      entries++;
      const to = path.join(dest, entry.rel);
      const got = await lstat(to);
      assert.equal(got.mode, entry.stats.mode, entry.rel);
      assert.equal(got.mtimeNs, entry.stats.mtimeNs, `${entry.rel} mtime`);
      if (entry.stats.isFile()) {
        assert.deepEqual(await fs.readFile(to), await fs.readFile(entry.path), entry.rel);
        const inode = `${entry.stats.ino}`;
        if (entry.stats.nlink > 1n) {
          if (copied.has(inode)) assert.equal(got.ino, copied.get(inode), `${entry.rel} is a hard link to the first copy`);
          else copied.set(inode, got.ino);
        }
      }
      if (entry.stats.isSymbolicLink()) assert.equal(await fs.readlink(to), await fs.readlink(entry.path));
    }
    assert.equal(entries, 6 * 103 + 3 + 1);
    assert.equal(copied.size, 3);
  });

  it('fails with the first error and starts nothing after it', async () => {
    const dest = path.join(base, 'clash');
    await fs.mkdir(path.join(dest, 'd0'), { recursive: true });
    // In the way of one of the queued copies.
    await fs.writeFile(path.join(dest, 'd0', 'f10'), 'already here');
    const copier = new TreeCopier({ concurrency: 2 });
    await assert.rejects(copyTree(copier, src, dest), (err: NodeJS.ErrnoException) => err.code === 'EEXIST');
    await copier.settle();
    const stats = await lstat(path.join(src, 'd0', 'f2'));
    assert.throws(() => copier.addFile(path.join(src, 'd0', 'f2'), path.join(dest, 'late'), stats), (err: NodeJS.ErrnoException) => err.code === 'EEXIST');
    await assert.rejects(fs.lstat(path.join(dest, 'late')), { code: 'ENOENT' });
  });
});
