import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ERROR_CODES, KilnError } from '../../../src/errors.js';
import { exportLocal } from '../../../src/exporter/local.js';
import { describeTree, makeRichTree, tempDir } from './tree-fixture.js';

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

  it('replaces what the destination held', async () => {
    const dest = path.join(work, 'out-replace');
    await fs.mkdir(path.join(dest, 'old-dir'), { recursive: true });
    await fs.writeFile(path.join(dest, 'stale.txt'), 'from before');
    await fs.writeFile(path.join(dest, 'big.bin'), 'overwritten');
    await exportLocal(src, dest);
    assert.deepEqual(await describeTree(dest), await describeTree(src));
    assert.deepEqual(await siblings(work), []);
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
    await assert.rejects(fs.access(dest));
    assert.deepEqual(await siblings(work), []);
  });

  it('removes staging dirs left by dead processes, and keeps those of live ones', async () => {
    const dest = path.join(work, 'out-leftovers');
    const dead = await deadPid();
    const stale = [`.out-leftovers.kiln-tmp-${dead}-0123abcd`, `.out-leftovers.kiln-old-${dead}-89abcdef`];
    const live = `.out-leftovers.kiln-tmp-${process.pid}-00000000`;
    for (const name of [...stale, live]) await fs.mkdir(path.join(work, name, 'half-written'), { recursive: true });
    await exportLocal(src, dest);
    assert.deepEqual(await siblings(work), [live]);
    await fs.rm(path.join(work, live), { recursive: true });
  });

  it('never leaves a half-filled destination when the exporting process is killed', async () => {
    const big = path.join(work, 'many-files');
    // Enough files that the copy takes a while, so that the kill lands in the middle of it.
    for (let d = 0; d < 15; d++) {
      await fs.mkdir(path.join(big, `d${d}`), { recursive: true });
      await Promise.all(Array.from({ length: 100 }, (_, f) => fs.writeFile(path.join(big, `d${d}`, `f${f}`), `${d}/${f}`)));
    }
    const dest = path.join(work, 'out-killed');
    await exportLocal(src, dest);
    const previous = await describeTree(dest);

    // Its own process group, so that SIGKILL takes cp down with node, as a machine crash would.
    const moduleUrl = new URL('../../../src/exporter/local.js', import.meta.url).href;
    const child = spawn(process.execPath, ['--input-type=module', '-e', `import(${JSON.stringify(moduleUrl)}).then((m) => m.exportLocal(${JSON.stringify(big)}, ${JSON.stringify(dest)}))`], {
      detached: true,
      stdio: 'ignore',
    });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    while ((await siblings(work)).length === 0 && child.exitCode === null) await new Promise((r) => setTimeout(r, 2));
    process.kill(-(child.pid as number), 'SIGKILL');
    await exited;
    assert.equal(child.signalCode, 'SIGKILL');
    assert.notDeepEqual(await siblings(work), [], 'killed while exporting, it left its staging dir behind');

    const found = await fs.access(dest).then(() => describeTree(dest), () => undefined);
    const whole = found === undefined || isDeepEqual(found, previous) || isDeepEqual(found, await describeTree(big));
    assert.ok(whole, 'the destination is the old or the new export, never a mix');

    await exportLocal(src, dest);
    assert.deepEqual(await describeTree(dest), previous);
    assert.deepEqual(await siblings(work), []);
  });
});

/** The pid of a process that has exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '']);
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid as number;
}

function isDeepEqual(a: unknown, b: unknown): boolean {
  try {
    assert.deepEqual(a, b);
    return true;
  } catch {
    return false;
  }
}
