/**
 * The process user of an exec op, resolved in its rootfs as BuildKit
 * resolves it (runc's user lookup, then the primary gid put first among the
 * supplementary groups).
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ERROR_CODES, KilnError } from '../../../src/errors.js';
import { LayeredTree } from '../../../src/fs/layered-tree.js';
import { resolveUser } from '../../../src/ops/exec/meta.js';

let tmp: string;
let rootfs: LayeredTree;
let bare: LayeredTree;
before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'kiln-user-'));
  await mkdir(path.join(tmp, 'root/etc'), { recursive: true });
  await mkdir(path.join(tmp, 'bare'));
  await writeFile(
    path.join(tmp, 'root/etc/passwd'),
    ['root:x:0:0::/root:/bin/sh', 'app:x:1000:1000::/home/app:/bin/sh', 'nobody:x:65534:65534::/:/bin/false', ''].join('\n'),
  );
  await writeFile(
    path.join(tmp, 'root/etc/group'),
    ['root:x:0:', 'wheel:x:10:root,app', 'app:x:1000:', 'audio:x:29:app', 'staff:x:50:', 'self:x:1000:app', 'nogroup:x:65534:', ''].join('\n'),
  );
  rootfs = LayeredTree.ofDirectory(path.join(tmp, 'root'));
  bare = LayeredTree.ofDirectory(path.join(tmp, 'bare'));
});
after(async () => rm(tmp, { recursive: true, force: true }));

describe('resolveUser', () => {
  const cases: [string, { uid: number; gid: number; additionalGids: number[] }][] = [
    // A user no group lists still gets its primary group (BuildKit: `groups=65534(nogroup)`).
    ['nobody', { uid: 65534, gid: 65534, additionalGids: [65534] }],
    // Every group listing the name, in file order; the primary one first unless listed.
    ['app', { uid: 1000, gid: 1000, additionalGids: [10, 29, 1000] }],
    // A uid with an entry is the same user.
    ['1000', { uid: 1000, gid: 1000, additionalGids: [10, 29, 1000] }],
    // The default user is root looked up like "0".
    ['', { uid: 0, gid: 0, additionalGids: [0, 10] }],
    // An explicit group: that group only.
    ['app:staff', { uid: 1000, gid: 50, additionalGids: [50] }],
    ['app:777', { uid: 1000, gid: 777, additionalGids: [777] }],
    ['nobody:', { uid: 65534, gid: 65534, additionalGids: [65534] }],
    // uid:gid (and root for 0) is taken as is, with no lookup.
    ['1000:2000', { uid: 1000, gid: 2000, additionalGids: [2000] }],
    ['root:5', { uid: 0, gid: 5, additionalGids: [5] }],
    // A uid without an entry: gid 0.
    ['4242', { uid: 4242, gid: 0, additionalGids: [0] }],
  ];
  for (const [spec, expected] of cases) {
    it(`${JSON.stringify(spec)} -> ${JSON.stringify(expected)}`, async () => {
      assert.deepEqual(await resolveUser(rootfs, spec), expected);
    });
  }

  it('gives root on a rootfs without /etc/passwd, and ids as they are', async () => {
    assert.deepEqual(await resolveUser(bare, ''), { uid: 0, gid: 0, additionalGids: [0] });
    assert.deepEqual(await resolveUser(bare, '12'), { uid: 12, gid: 0, additionalGids: [0] });
    assert.deepEqual(await resolveUser(bare, '12:34'), { uid: 12, gid: 34, additionalGids: [34] });
  });

  it('fails on an unknown user or group name, saying where it looked', async () => {
    for (const [spec, text] of [['ghost', /unknown user "ghost".*\/etc\/passwd/], ['app:ghosts', /unknown group "ghosts".*\/etc\/group/]] as const) {
      await assert.rejects(resolveUser(rootfs, spec), (err: unknown) => {
        assert.ok(err instanceof KilnError);
        assert.equal(err.code, ERROR_CODES.EXEC_FAILED);
        assert.match(err.message, text);
        return true;
      });
    }
  });
});
