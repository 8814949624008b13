/**
 * A copy with attemptUnpack (Dockerfile ADD of a local archive) unpacks tar
 * archives, plain or compressed with gzip, bzip2, xz or zstd, into dest as
 * `tar -x` does: owners, modes, times, links kept; an existing directory
 * merged into; `--chown` applied to every entry; nothing written outside.
 * Real GNU tar makes the archives; runs as root (real owners).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { ERROR_CODES } from '../../../src/errors.js';
import { applyFileAction } from '../../../src/ops/file/apply.js';
import type { Area } from '../../unit/file-op/fixture.js';
import { copyAction, makeArea, rejectsWith } from '../../unit/file-op/fixture.js';

const MTIME = new Date('2021-03-04T05:06:07Z');

describe('copy with attemptUnpack unpacks archives', () => {
  let area: Area;
  beforeEach(async () => {
    area = await makeArea();
  });
  afterEach(async () => area.dispose());

  /** A tree with owners, modes, a symlink, a hardlink and a `.wh.` name, archived by GNU tar as `name` with `compressFlag`. */
  async function archive(name: string, compressFlag: string[]): Promise<void> {
    const tree = path.join(area.base, 'tree');
    await fs.rm(tree, { recursive: true, force: true });
    await fs.mkdir(path.join(tree, 'app', 'bin'), { recursive: true });
    await fs.writeFile(path.join(tree, 'app', 'bin', 'tool'), '#!/bin/sh\necho tool\n');
    await fs.writeFile(path.join(tree, 'app', 'secret.conf'), 'k=v\n');
    await fs.writeFile(path.join(tree, 'app', '.wh.keep'), 'an ordinary file in an archive\n');
    await fs.symlink('bin/tool', path.join(tree, 'app', 'run'));
    await fs.link(path.join(tree, 'app', 'bin', 'tool'), path.join(tree, 'app', 'tool-link'));
    await fs.chmod(path.join(tree, 'app', 'bin', 'tool'), 0o755);
    await fs.chmod(path.join(tree, 'app', 'secret.conf'), 0o640);
    await fs.chmod(path.join(tree, 'app', 'bin'), 0o750);
    await fs.lchown(path.join(tree, 'app', 'secret.conf'), 1234, 5678);
    await fs.lchown(path.join(tree, 'app', 'bin'), 42, 43);
    for (const rel of ['app/bin/tool', 'app/secret.conf', 'app/.wh.keep', 'app/bin', 'app']) await fs.utimes(path.join(tree, rel), MTIME, MTIME);
    execFileSync('tar', ['-c', ...compressFlag, '-f', path.join(area.source, name), '--numeric-owner', '-C', tree, 'app']);
  }

  const cases: [string, string[]][] = [
    ['a.tar', []],
    ['a.tar.gz', ['--gzip']],
    ['a.tar.bz2', ['--bzip2']],
    ['a.tar.xz', ['--xz']],
    ['a.tar.zst', ['--zstd']],
  ];
  for (const [name, flag] of cases) {
    it(`${name}: unpacked into a new dest with owners, modes, times and links as archived`, async () => {
      await archive(name, flag);
      await applyFileAction(copyAction({ src: `/${name}`, dest: '/opt/', attemptUnpack: true, createDestPath: true }), { target: area.target, source: area.source });
      const app = path.join(area.target, 'opt', 'app');
      assert.equal(await fs.readFile(path.join(app, 'bin', 'tool'), 'utf8'), '#!/bin/sh\necho tool\n');
      const conf = await fs.lstat(path.join(app, 'secret.conf'));
      assert.deepEqual([conf.mode & 0o7777, conf.uid, conf.gid], [0o640, 1234, 5678]);
      const bin = await fs.lstat(path.join(app, 'bin'));
      assert.deepEqual([bin.mode & 0o7777, bin.uid, bin.gid], [0o750, 42, 43]);
      assert.equal(bin.mtime.getTime(), MTIME.getTime(), 'directory times are set after their contents');
      assert.equal(conf.mtime.getTime(), MTIME.getTime());
      assert.equal(await fs.readlink(path.join(app, 'run')), 'bin/tool');
      assert.equal((await fs.stat(path.join(app, 'tool-link'))).ino, (await fs.stat(path.join(app, 'bin', 'tool'))).ino, 'a hardlink stays one');
      assert.equal(await fs.readFile(path.join(app, '.wh.keep'), 'utf8'), 'an ordinary file in an archive\n');
      const opt = await fs.lstat(path.join(area.target, 'opt'));
      assert.equal(opt.mode & 0o7777, 0o755, 'dest is made 0755');
      assert.equal(await fs.readdir(area.target).then((names) => names.includes(name)), false, 'the archive itself is not copied');
    });
  }

  it('merges into an existing directory, replaces a file in the way, and --chown owns every entry', async () => {
    await archive('a.tar.gz', ['--gzip']);
    await fs.mkdir(path.join(area.target, 'opt', 'app'), { recursive: true });
    await fs.writeFile(path.join(area.target, 'opt', 'app', 'mine'), 'kept\n');
    await fs.writeFile(path.join(area.target, 'opt', 'app', 'secret.conf'), 'old\n');
    await applyFileAction(copyAction({ src: '/a.tar.gz', dest: '/opt', attemptUnpack: true, owner: { user: 7, group: 8 } }), { target: area.target, source: area.source });
    const app = path.join(area.target, 'opt', 'app');
    assert.equal(await fs.readFile(path.join(app, 'mine'), 'utf8'), 'kept\n');
    assert.equal(await fs.readFile(path.join(app, 'secret.conf'), 'utf8'), 'k=v\n');
    for (const rel of ['secret.conf', 'bin', 'bin/tool', 'run']) {
      const st = await fs.lstat(path.join(app, rel));
      assert.deepEqual([st.uid, st.gid], [7, 8], rel);
    }
  });

  it('refuses an entry that climbs out of dest, naming it, and writes nothing outside', async () => {
    const evil = path.join(area.base, 'evil');
    await fs.mkdir(path.join(evil, 'x'), { recursive: true });
    await fs.writeFile(path.join(area.base, 'escaped'), 'outside\n');
    execFileSync('tar', ['-cf', path.join(area.source, 'evil.tar'), '-C', evil, '--transform', 's,^x,../../escaped,', '-P', 'x']);
    const before = await area.outsideState();
    await rejectsWith(
      applyFileAction(copyAction({ src: '/evil.tar', dest: '/dest/', attemptUnpack: true, createDestPath: true }), { target: area.target, source: area.source }),
      ERROR_CODES.FILE_ACTION,
      'cannot unpack the archive "/evil.tar": entry "../../escaped/": the name "../../escaped/" has a ".." component',
      area,
    );
    assert.deepEqual(await area.outsideState(), before);
  });
});
