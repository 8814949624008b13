/**
 * A full disk, on each worker: kiln's root on a small loop-mounted ext4.
 * A step whose own process runs out of space fails as the step, with its
 * output. A build on a root with no space left fails with one line that
 * says "no space left on device" and names the filesystem, whatever layer
 * hit it, never as a step's "exit code 255". Needs root, losetup and
 * mkfs.ext4 (e2fsprogs).
 */
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { kiln, mountsUnder, removeDir, tempDir } from './harness.js';
import { busyboxOps, shStep, WORKERS, workerSuite } from './workers.js';

for (const workerId of WORKERS) {
  describe(`a full disk on the ${workerId} worker`, () => {
    const suite = workerSuite(workerId, 'disk');
    let disk = '';
    let mnt = '';
    let root = '';
    let n = 0;

    before(async () => {
      // Its own temp dir: unmounted and removed by this suite's after, whatever the order of hooks.
      disk = await tempDir(`disk-img-${workerId}`);
      const image = join(disk, 'fs.img');
      mnt = join(disk, 'mnt');
      root = join(mnt, 'root');
      await execa('truncate', ['-s', '16M', image]);
      await execa('mkfs.ext4', ['-q', '-F', image]);
      await mkdir(mnt);
      await execa('mount', ['-o', 'loop', image, mnt]);
    });
    after(async () => {
      await execa('umount', [mnt], { reject: false });
      await removeDir(disk);
    });

    /** Builds a step running `script` on the busybox base, with /out as its result. */
    const build = async (script: string) => {
      const file = join(suite.work, `def${n++}.json`);
      await writeFile(file, JSON.stringify({ version: 1, ops: { ...(await busyboxOps()), step: shStep(script) }, result: 'step' }));
      return kiln(['build', file, '--root', root, '--local', 'tools=/bin', ...suite.workerArgs('build'), '--debug']);
    };

    test("a process that fills the disk fails as the step, with its own output", async () => {
      const r = await build('dd if=/dev/zero of=/out/big bs=64k');
      assert.equal(r.exitCode, 1, r.stderr);
      assert.match(r.stderr, /^error: op "[^"]+": process "\/bin\/sh -c dd if=\/dev\/zero of=\/out\/big bs=64k" did not complete successfully: exit code 1$/m);
      assert.match(r.stderr, /^\[E_EXEC_FAILED\]/m);
      assert.match(r.stderr, /No space left on device/, "the process's own words");
    });

    test('on a full disk the build fails with one line naming "no space left" and the filesystem', async () => {
      // The base is built while there is room; then every free block goes.
      assert.equal((await build('true')).exitCode, 0);
      await execa('dd', ['if=/dev/zero', `of=${join(mnt, 'fill')}`, 'bs=64k'], { reject: false });
      await execa('dd', ['if=/dev/zero', `of=${join(mnt, 'fill-rest')}`, 'bs=1k'], { reject: false });
      const r = await build('echo hi > /out/hi');
      assert.equal(r.exitCode, 1, r.stderr);
      const errors = r.stderr.split('\n').filter((l) => l.startsWith('error: '));
      assert.equal(errors.length, 1, r.stderr);
      const [line = ''] = errors;
      assert.match(line, /no space left on device/i);
      assert.match(line, new RegExp(`the filesystem at ${mnt} \\(ext4 on /dev/loop\\d+, holding ${root}[^)]*\\) is full: 0B of \\d+\\.\\d+MiB free`));
      assert.doesNotMatch(r.stderr, /exit code 255/);
      assert.doesNotMatch(r.stderr, /^\[E_EXEC_FAILED\]/m, 'not blamed on the step');
      assert.deepEqual(await mountsUnder(root), [], 'no mount left behind');
    });
  });
}
