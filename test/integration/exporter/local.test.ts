import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { execa } from 'execa';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ERROR_CODES, KilnError } from '../../../src/errors.js';
import { exportLocal } from '../../../src/exporter/local.js';
import { describeTree, makeRichTree, tempDir } from '../../support/tree-fixture.js';

describe('exportLocal', () => {
  let work: string;
  let src: string;
  before(async () => {
    work = await tempDir();
    src = path.join(work, 'src');
    await fs.mkdir(src);
    await makeRichTree(src);
  });
  after(() => fs.rm(work, { recursive: true, force: true }));

  const siblings = async (dir: string): Promise<string[]> => (await fs.readdir(dir)).filter((name) => name.includes('.kiln-'));

  it('copies every entry with its modes, owners, ns mtimes, xattrs, symlinks, hardlinks and devices', async () => {
    const dest = path.join(work, 'out-rich', 'nested', 'dest');
    await exportLocal(src, dest);
    assert.deepEqual(await describeTree(dest), await describeTree(src));
    assert.deepEqual(await siblings(path.dirname(dest)), []);
  });

  it('writes into the destination: entries of the result replace theirs, other entries stay', async () => {
    const dest = path.join(work, 'out-merge');
    await fs.mkdir(path.join(dest, 'a', 'mine'), { recursive: true });
    await fs.writeFile(path.join(dest, 'a', 'mine', 'notes.txt'), 'keep me');
    await fs.writeFile(path.join(dest, 'stale.txt'), 'from before');
    await fs.writeFile(path.join(dest, 'big.bin'), 'overwritten');
    await fs.writeFile(path.join(dest, 'a', 'file.txt'), 'old content');
    await exportLocal(src, dest);
    assert.equal(await fs.readFile(path.join(dest, 'stale.txt'), 'utf8'), 'from before');
    assert.equal(await fs.readFile(path.join(dest, 'a', 'mine', 'notes.txt'), 'utf8'), 'keep me');
    // The rest is exactly the result, metadata of merged dirs included.
    const written = await describeTree(dest);
    for (const mine of ['stale.txt', 'a/mine', 'a/mine/notes.txt']) written.delete(mine);
    assert.deepEqual(written, await describeTree(src));
    assert.deepEqual(await siblings(dest), []);
  });

  it('replaces an entry of another kind, and never writes through a symlink it finds', async () => {
    const dest = path.join(work, 'out-kinds');
    const outside = path.join(work, 'outside');
    await fs.mkdir(outside);
    await fs.mkdir(path.join(dest, 'big.bin', 'was-a-dir'), { recursive: true });
    await fs.writeFile(path.join(dest, 'deep'), 'was a file');
    await fs.symlink(outside, path.join(dest, 'a'));
    await exportLocal(src, dest);
    assert.deepEqual(await describeTree(dest), await describeTree(src));
    assert.deepEqual(await fs.readdir(outside), [], 'nothing went through the symlink');
  });

  it('lets concurrent exports into one destination all succeed, each file whole', async () => {
    const other = path.join(work, 'other-src');
    await fs.mkdir(path.join(other, 'a'), { recursive: true });
    await fs.writeFile(path.join(other, 'a', 'file.txt'), 'from the other build\n');
    for (const dest of [path.join(work, 'out-concurrent-new'), path.join(work, 'out-concurrent-old')]) {
      if (dest.endsWith('old')) await exportLocal(src, dest);
      await Promise.all(Array.from({ length: 6 }, (_, i) => exportLocal(i % 2 === 0 ? src : other, dest)));
      const text = await fs.readFile(path.join(dest, 'a', 'file.txt'), 'utf8');
      assert.ok(text === 'hello kiln\n' || text === 'from the other build\n', text);
      assert.deepEqual(await siblings(dest), []);
    }
  });

  it('writes into a destination that is a mount point', async () => {
    const dest = path.join(work, 'out-mountpoint');
    await fs.mkdir(dest);
    await execa('mount', ['-t', 'tmpfs', 'tmpfs', dest]);
    try {
      await fs.writeFile(path.join(dest, 'kept'), 'here');
      await exportLocal(src, dest);
      assert.equal(await fs.readFile(path.join(dest, 'a', 'file.txt'), 'utf8'), 'hello kiln\n');
      assert.equal(await fs.readFile(path.join(dest, 'kept'), 'utf8'), 'here');
    } finally {
      await execa('umount', [dest]);
    }
  });

  it('exports through a symlink at the destination into its target', async () => {
    const target = path.join(work, 'out-target');
    const link = path.join(work, 'out-link');
    await fs.mkdir(target);
    await fs.symlink(target, link);
    await exportLocal(src, link);
    assert.ok((await fs.lstat(link)).isSymbolicLink());
    assert.deepEqual(await describeTree(target), await describeTree(src));
  });

  it('refuses a destination that is a file, and leaves it alone', async () => {
    const dest = path.join(work, 'out-file');
    await fs.writeFile(dest, 'keep me');
    await assert.rejects(exportLocal(src, dest), (err: unknown) => err instanceof KilnError && err.code === ERROR_CODES.OUTPUT && err.message.includes(dest));
    assert.equal(await fs.readFile(dest, 'utf8'), 'keep me');
  });

  it('leaves the destination as it was when the copy fails', async () => {
    const dest = path.join(work, 'out-failed');
    await fs.mkdir(dest);
    await fs.writeFile(path.join(dest, 'kept.txt'), 'still here');
    const missing = path.join(work, 'no-such-src');
    await assert.rejects(
      exportLocal(missing, dest),
      (err: unknown) => err instanceof KilnError && err.code === ERROR_CODES.OUTPUT && err.message.includes(missing),
    );
    assert.deepEqual(await fs.readdir(dest), ['kept.txt']);
    assert.deepEqual(await siblings(work), []);
  });

  it('rejects with the abort reason and writes nothing when cancelled', async () => {
    const dest = path.join(work, 'out-cancelled');
    const reason = new Error('stop now');
    await assert.rejects(exportLocal(src, dest, { signal: AbortSignal.abort(reason) }), (err: unknown) => err === reason);
    assert.deepEqual(await fs.readdir(dest).catch(() => []), []);
  });

  it('removes staging dirs left by dead processes, and keeps those of live ones', async () => {
    const dest = path.join(work, 'out-leftovers');
    const dead = await deadPid();
    const live = process.ppid;
    const stale = [`.kiln-out-${dead}-0123abcd`, `.other.tar.kiln-tmp-${dead}-89abcdef`];
    const kept = `.kiln-out-${live}-00000000`;
    for (const name of [...stale, kept]) await fs.mkdir(path.join(dest, name, 'half-written'), { recursive: true });
    await exportLocal(src, dest);
    assert.deepEqual(await siblings(dest), [kept]);
    await fs.rm(path.join(dest, kept), { recursive: true });
  });

  it('never leaves a half-written file when the exporting process is killed', async () => {
    const big = path.join(work, 'many-files');
    // Enough files that the copy takes a while, so that the kill lands in the middle of it.
    for (let d = 0; d < 15; d++) {
      await fs.mkdir(path.join(big, `d${d}`), { recursive: true });
      await Promise.all(Array.from({ length: 100 }, (_, f) => fs.writeFile(path.join(big, `d${d}`, `f${f}`), `${d}/${f}`.repeat(1000))));
    }
    const dest = path.join(work, 'out-killed');
    for (let d = 0; d < 15; d++) {
      await fs.mkdir(path.join(dest, `d${d}`), { recursive: true });
      await Promise.all(Array.from({ length: 100 }, (_, f) => fs.writeFile(path.join(dest, `d${d}`, `f${f}`), 'old')));
    }

    // Its own process group, so that SIGKILL takes cp down with node, as a machine crash would.
    const moduleUrl = new URL('../../../src/exporter/local.js', import.meta.url).href;
    const child = spawn(process.execPath, ['--input-type=module', '-e', `import(${JSON.stringify(moduleUrl)}).then((m) => m.exportLocal(${JSON.stringify(big)}, ${JSON.stringify(dest)}))`], {
      detached: true,
      stdio: 'ignore',
    });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    while ((await siblings(dest)).length === 0 && child.exitCode === null) await new Promise((r) => setTimeout(r, 2));
    process.kill(-(child.pid as number), 'SIGKILL');
    await exited;
    assert.equal(child.signalCode, 'SIGKILL');
    assert.notDeepEqual(await siblings(dest), [], 'killed while exporting, it left its staging dir behind');

    for (let d = 0; d < 15; d++) {
      for (let f = 0; f < 100; f++) {
        const text = await fs.readFile(path.join(dest, `d${d}`, `f${f}`), 'utf8');
        assert.ok(text === 'old' || text === `${d}/${f}`.repeat(1000), `d${d}/f${f} is the old or the new file, never a part`);
      }
    }

    await exportLocal(src, dest);
    assert.deepEqual(await siblings(dest), [], 'the next export removed the dead one\'s staging dir');
  });
});

/** The pid of a process that has exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '']);
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid as number;
}
