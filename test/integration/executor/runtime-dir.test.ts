/**
 * Executors' runtime directories: private, one per root, always on a
 * tmpfs. A base already on a tmpfs is used as it is; a base on a disk gets
 * a tmpfs mounted once, even by callers racing. Needs root (mount).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmod, lstat, mkdir, mkdtemp, readFile, rm, statfs } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { executorRuntimeDir, runtimeDirPath } from '../../../src/executor/runtime-dir.js';

const TMPFS_MAGIC = 0x01021994;

/** How many mounts sit at `dir`. */
async function mountCount(dir: string): Promise<number> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').filter((l) => l.split(' ')[4] === dir).length;
}

describe('executor runtime directory', () => {
  let shmBase: string;
  let diskTmp: string;

  before(async () => {
    shmBase = await mkdtemp('/dev/shm/kiln-rtdir-');
    diskTmp = await mkdtemp(path.join(os.tmpdir(), 'kiln-rtdir-'));
  });
  after(async () => {
    const base = path.join(diskTmp, 'run');
    while ((await mountCount(base)) > 0) execFileSync('umount', [base]);
    await rm(shmBase, { recursive: true, force: true });
    await rm(diskTmp, { recursive: true, force: true });
  });

  test('a base on a tmpfs is used as it is: one private directory per root and executor', async () => {
    const base = path.join(shmBase, 'kiln');
    const a = await executorRuntimeDir({ root: '/var/lib/a', executor: 'runc', base });
    const b = await executorRuntimeDir({ root: '/var/lib/b', executor: 'runc', base });
    assert.notEqual(path.dirname(a), path.dirname(b), 'two roots never share a directory');
    assert.equal(a, runtimeDirPath({ root: '/var/lib/a/', executor: 'runc', base }), 'the path depends on the root, not how it is spelled');
    assert.equal(await executorRuntimeDir({ root: '/var/lib/a', executor: 'runc', base }), a, 'the same root gets the same directory again');
    assert.equal(path.basename(a), 'runc');
    for (const dir of [base, path.dirname(a), a]) assert.equal((await lstat(dir)).mode & 0o777, 0o700, dir);
    assert.equal(await readFile(path.join(path.dirname(a), 'root'), 'utf8'), '/var/lib/a\n', 'says which root it is for');
    assert.equal(await mountCount(base), 0, 'nothing mounted on a tmpfs already');
  });

  test('a base on a disk gets a tmpfs, mounted once even by callers racing', async (t) => {
    if ((await statfs(os.tmpdir())).type === TMPFS_MAGIC) return t.skip(`${os.tmpdir()} is a tmpfs`);
    const base = path.join(diskTmp, 'run');
    const dirs = await Promise.all(['x', 'y', 'z'].map((root) => executorRuntimeDir({ root: `/r/${root}`, executor: 'containerd', base })));
    assert.equal(await mountCount(base), 1, 'one tmpfs, not one per caller');
    for (const dir of dirs) assert.equal((await statfs(dir)).type, TMPFS_MAGIC, dir);
    assert.equal((await lstat(base)).mode & 0o777, 0o700);
  });

  test('a directory others can read is refused, not used for secrets', async () => {
    const base = path.join(shmBase, 'open');
    await mkdir(base, { mode: 0o755 });
    await chmod(base, 0o755);
    await assert.rejects(executorRuntimeDir({ root: '/var/lib/a', executor: 'runc', base }), {
      code: 'E_EXECUTOR',
      message: `${base} is not a private directory of this user (it must be a directory owned by uid 0 with mode 0700); remove it and build again`,
    });
  });
});
