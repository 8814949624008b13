/**
 * Naming a full filesystem: on a real tmpfs mounted small and filled, the
 * ENOSPC a write gets is recognised, and the sentence names the mount point,
 * its type and what is free; among several paths the full one is named.
 * Needs root (mount).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { explainNoSpace, fullFilesystem, isNoSpace, pathsIn } from '../../../src/fs/no-space.js';

describe('no space left', () => {
  let tmp: string;
  let small: string;
  let enospc: unknown;

  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'kiln-nospace-'));
    small = path.join(tmp, 'small');
    await mkdir(small);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'kiln-test-full', small]);
    enospc = await writeFile(path.join(small, 'fill'), Buffer.alloc(128 * 1024)).then(
      () => undefined,
      (err: unknown) => err,
    );
  });
  after(async () => {
    execFileSync('umount', [small]);
    await rm(tmp, { recursive: true, force: true });
  });

  test('a real ENOSPC, and a runtime message saying it, are recognised; other failures are not', () => {
    assert.ok(isNoSpace(enospc), 'the write into the full tmpfs failed with ENOSPC');
    assert.ok(isNoSpace('runc run failed: error mounting "overlay": no space left on device'));
    assert.ok(!isNoSpace(new Error('EACCES: permission denied')));
    assert.ok(!isNoSpace(undefined));
  });

  test('the sentence names the mount point, the type and device, the path it holds and the room left', () => {
    const inside = path.join(small, 'not', 'made', 'yet');
    assert.equal(fullFilesystem([inside]), `the filesystem at ${small} (tmpfs on kiln-test-full) is full: 0B of 64.0KiB free`);
    const sub = path.join(small, 'sub');
    execFileSync('mkdir', [sub]);
    assert.match(fullFilesystem([sub]) ?? '', new RegExp(`^the filesystem at ${small} \\(tmpfs on kiln-test-full, holding ${sub}\\) is full`));
  });

  test('among several paths, the full filesystem is named, not a roomy one', () => {
    assert.match(fullFilesystem([tmp, path.join(small, 'x')]) ?? '', new RegExp(`^the filesystem at ${small} `));
    assert.match(fullFilesystem([path.join(small, 'x'), tmp]) ?? '', new RegExp(`^the filesystem at ${small} `));
  });

  test('explainNoSpace adds the filesystem to an ENOSPC message, from the paths it names, and leaves others alone', () => {
    const message = `ENOSPC: no space left on device, mkdir '${path.join(small, 'd')}'`;
    assert.equal(explainNoSpace(message), `${message} (${fullFilesystem([small])})`);
    assert.equal(explainNoSpace('no space left on device', [small]), `no space left on device (${fullFilesystem([small])})`);
    assert.equal(explainNoSpace(`EACCES: permission denied, mkdir '${small}'`), `EACCES: permission denied, mkdir '${small}'`);
  });

  test('paths are found in the forms runtimes write them', () => {
    assert.deepEqual(pathsIn(`mkdir '/a/b' upperdir=/c/d,workdir=/e "/f": g /`), ['/a/b', '/c/d', '/e', '/f']);
  });
});
