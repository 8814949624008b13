import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { ERROR_CODES } from '../../../src/errors.js';
import { compileCopyMode } from '../../../src/ops/file/chmod.js';
import { resolveOwner } from '../../../src/ops/file/chown.js';
import type { Area } from './fixture.js';
import { makeArea, rejectsWith, writeTree } from './fixture.js';

describe('compileCopyMode', () => {
  /** [expression, start mode, is a directory, expected] */
  const table: [string, number, boolean, number][] = [
    ['u+x', 0o644, false, 0o744],
    ['+x', 0o644, false, 0o755],
    ['a+x', 0o644, false, 0o755],
    ['go-w', 0o666, false, 0o644],
    ['a=r', 0o777, false, 0o444],
    ['u=rwx,go=rx', 0o000, false, 0o755],
    ['u+x-w', 0o644, false, 0o544],
    ['g=u', 0o640, false, 0o660],
    ['o=g', 0o750, false, 0o755],
    ['+X', 0o644, false, 0o644], // no one may execute the file: X does nothing
    ['+X', 0o744, false, 0o755],
    ['+X', 0o644, true, 0o755],
    ['u+s', 0o755, false, 0o4755],
    ['g+s', 0o755, true, 0o2755],
    ['o+s', 0o755, false, 0o755], // "s" means nothing for others
    ['+t', 0o777, true, 0o1777],
    ['u-s,o-t', 0o5755, false, 0o755],
    ['go=', 0o2775, true, 0o2700], // "=" keeps a directory's setgid
    ['go=', 0o2775, false, 0o700],
    ['u=rw,g=r,o=', 0o777, false, 0o640],
  ];
  for (const [expr, start, isDir, expected] of table) {
    it(`${expr} on ${start.toString(8)}${isDir ? ' (dir)' : ''} -> ${expected.toString(8)}`, () => {
      assert.equal(compileCopyMode({ kind: 'chmod', expr })(start, isDir).toString(8), expected.toString(8));
    });
  }

  it('sets bits as given', () => {
    assert.equal(compileCopyMode({ kind: 'bits', bits: 0o4710 })(0o644, false), 0o4710);
  });

  for (const bad of ['', 'u+q', 'x+u', 'u', 'a+z', 'u+x,,g+w', '755', 'u+rg']) {
    it(`rejects ${JSON.stringify(bad)}`, () => {
      assert.throws(
        () => compileCopyMode({ kind: 'chmod', expr: bad }),
        (err: unknown) => err instanceof Error && 'code' in err && err.code === ERROR_CODES.FILE_ACTION && err.message.includes(`"${bad}"`),
      );
    });
  }
});

describe('resolveOwner', () => {
  let area: Area;
  beforeEach(async () => {
    area = await makeArea();
    await writeTree(area.target, {
      'etc/passwd': ['# comment', 'root:x:0:0:root:/root:/bin/sh', 'app:x:1000:1001::/home/app:/bin/sh', 'app:x:2000:2000::/dup:/bin/sh', 'svc:x:1500:1500::/:/bin/false', ''].join('\n'),
      'etc/group': ['root:x:0:', 'staff:x:50:app', 'app:x:1001:'].join('\n'),
    });
  });
  afterEach(async () => area.dispose());

  it('leaves the owner alone when none is given', async () => {
    assert.equal(await resolveOwner(area.target, undefined), undefined);
  });

  it('looks names up in the target, not on the host', async () => {
    assert.deepEqual(await resolveOwner(area.target, { user: 'app' }), { uid: 1000, gid: 1001 });
    assert.deepEqual(await resolveOwner(area.target, { user: 'app', group: 'staff' }), { uid: 1000, gid: 50 });
    assert.deepEqual(await resolveOwner(area.target, { group: 'staff' }), { uid: 0, gid: 50 });
  });

  it('uses a numeric user as the group too, unless one is given', async () => {
    assert.deepEqual(await resolveOwner(area.target, { user: 33 }), { uid: 33, gid: 33 });
    assert.deepEqual(await resolveOwner(area.target, { user: 33, group: 'app' }), { uid: 33, gid: 1001 });
    assert.deepEqual(await resolveOwner(area.target, { user: 'svc', group: 7 }), { uid: 1500, gid: 7 });
  });

  it('reads a name that is a number and not in the file as an id', async () => {
    assert.deepEqual(await resolveOwner(area.target, { user: '4242', group: '99' }), { uid: 4242, gid: 99 });
  });

  it('fails on an unknown name, saying where it looked', async () => {
    await rejectsWith(resolveOwner(area.target, { user: 'nobody-here' }), ERROR_CODES.FILE_ACTION, '"nobody-here"', area);
    await rejectsWith(resolveOwner(area.target, { user: 'app', group: 'wheel' }), ERROR_CODES.FILE_ACTION, '/etc/group', area);
  });

  it('follows a symlinked /etc inside the target only', async () => {
    const fresh = await makeArea();
    try {
      await writeTree(fresh.target, { 'real/passwd': 'bob:x:77:78::/:/bin/sh\n', etc: { link: '/real' } });
      assert.deepEqual(await resolveOwner(fresh.target, { user: 'bob' }), { uid: 77, gid: 78 });
      // A link aiming at the host's /etc lands on the target's own /etc (here the
      // link itself, a loop): the host's passwd, which knows root, is never read.
      await writeTree(fresh.source, { etc: { link: '../../../../../../etc' } });
      await rejectsWith(resolveOwner(fresh.source, { user: 'root' }), ERROR_CODES.FILE_ACTION, 'symbolic links', fresh);
      await writeTree(fresh.source, { 'usr/passwd': 'other:x:1:1::/:/bin/sh\n' });
      await fs.rm(path.join(fresh.source, 'etc'));
      await writeTree(fresh.source, { etc: { link: '/usr' } });
      await rejectsWith(resolveOwner(fresh.source, { user: 'root' }), ERROR_CODES.FILE_ACTION, '"root"', fresh);
    } finally {
      await fresh.dispose();
    }
  });
});
