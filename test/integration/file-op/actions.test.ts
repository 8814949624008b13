import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { execa } from 'execa';
import { ERROR_CODES } from '../../../src/errors.js';
import { applyFileAction } from '../../../src/ops/file/apply.js';
import type { Area } from '../../unit/file-op/fixture.js';
import { action, listTree, makeArea, rejectsWith, writeTree } from '../../unit/file-op/fixture.js';

const TS = 1_700_000_000_123_456_789n;
const lstat = (p: string) => fs.lstat(p, { bigint: true });
const modeOf = async (p: string) => Number((await lstat(p)).mode) & 0o7777;

let area: Area;
beforeEach(async () => {
  area = await makeArea();
});
afterEach(async () => area.dispose());

const run = (a: Parameters<typeof applyFileAction>[0]) => applyFileAction(a, { target: area.target });

describe('mkdir', () => {
  it('creates a directory with the exact mode (no umask), owner and timestamp', async () => {
    await run(action({ kind: 'mkdir', mkdir: { path: '/d', mode: 0o777, makeParents: false, owner: { user: 5, group: 6 }, timestamp: TS } }));
    const st = await lstat(path.join(area.target, 'd'));
    assert.deepEqual([Number(st.mode) & 0o7777, st.uid, st.gid, st.mtimeNs], [0o777, 5n, 6n, TS]);
  });

  it('accepts an existing directory and leaves it as it was', async () => {
    await fs.mkdir(path.join(area.target, 'd'), 0o700);
    await run(action({ kind: 'mkdir', mkdir: { path: 'd', mode: 0o755, makeParents: false } }));
    assert.equal(await modeOf(path.join(area.target, 'd')), 0o700);
  });

  it('drops setuid, setgid and sticky from the mode, as BuildKit does', async () => {
    await run(action({ kind: 'mkdir', mkdir: { path: '/t', mode: 0o1777, makeParents: false } }));
    await run(action({ kind: 'mkdir', mkdir: { path: '/p/t', mode: 0o3775, makeParents: true } }));
    assert.deepEqual([await modeOf(path.join(area.target, 't')), await modeOf(path.join(area.target, 'p/t'))], [0o777, 0o775]);
  });

  it('fails on a missing parent unless makeParents, which gives parents the mode, owner and time', async () => {
    await rejectsWith(run(action({ kind: 'mkdir', mkdir: { path: '/a/b/c', mode: 0o700, makeParents: false } })), ERROR_CODES.PATH_NOT_FOUND, '"/a/b/c"', area);
    await run(action({ kind: 'mkdir', mkdir: { path: '/a/b/c', mode: 0o700, makeParents: true, owner: { user: 7 }, timestamp: TS } }));
    for (const [p, mode] of [['a', 0o700], ['a/b', 0o700], ['a/b/c', 0o700]] as const) {
      const st = await lstat(path.join(area.target, p));
      assert.deepEqual([Number(st.mode) & 0o7777, st.uid, st.gid, st.mtimeNs], [mode, 7n, 7n, TS], p);
    }
  });

  it('fails on a non-directory in the way', async () => {
    await writeTree(area.target, { file: 'x' });
    await rejectsWith(run(action({ kind: 'mkdir', mkdir: { path: '/file', mode: 0o755, makeParents: false } })), ERROR_CODES.PATH_EXISTS, '"/file"', area);
    await rejectsWith(run(action({ kind: 'mkdir', mkdir: { path: '/file/sub', mode: 0o755, makeParents: true } })), ERROR_CODES.NOT_A_DIRECTORY, '/file', area);
    await rejectsWith(run(action({ kind: 'mkdir', mkdir: { path: '/file/sub', mode: 0o755, makeParents: false } })), ERROR_CODES.NOT_A_DIRECTORY, '"/file/sub"', area);
  });
});

describe('mkfile', () => {
  const data = new TextEncoder().encode('hello\n');

  it('writes data with the mode\'s permission bits (not setuid, as BuildKit), owner and timestamp', async () => {
    await run(action({ kind: 'mkfile', mkfile: { path: '/f', mode: 0o4755, data, owner: { user: 1, group: 2 }, timestamp: TS } }));
    const p = path.join(area.target, 'f');
    const st = await lstat(p);
    assert.equal(await fs.readFile(p, 'utf8'), 'hello\n');
    assert.deepEqual([Number(st.mode) & 0o7777, st.uid, st.gid, st.mtimeNs], [0o755, 1n, 2n, TS]);
  });

  it('overwrites an existing file in place, keeping its mode as BuildKit does', async () => {
    await writeTree(area.target, { f: 'old contents that are longer' });
    await fs.chmod(path.join(area.target, 'f'), 0o640);
    await fs.link(path.join(area.target, 'f'), path.join(area.target, 'g'));
    await run(action({ kind: 'mkfile', mkfile: { path: 'f', mode: 0o600, data } }));
    assert.equal(await fs.readFile(path.join(area.target, 'g'), 'utf8'), 'hello\n');
    assert.equal(await modeOf(path.join(area.target, 'f')), 0o640);
  });

  it('follows a symlink inside the root', async () => {
    await writeTree(area.target, { 'etc/': '', link: { link: '/etc/conf' } });
    await run(action({ kind: 'mkfile', mkfile: { path: '/link', mode: 0o644, data } }));
    assert.equal(await fs.readFile(path.join(area.target, 'etc/conf'), 'utf8'), 'hello\n');
    assert.equal(await fs.readlink(path.join(area.target, 'link')), '/etc/conf');
  });

  it('replaces a fifo in the way instead of opening it', async () => {
    await execa('mkfifo', [path.join(area.target, 'pipe')]);
    await run(action({ kind: 'mkfile', mkfile: { path: '/pipe', mode: 0o644, data } }));
    assert.ok((await lstat(path.join(area.target, 'pipe'))).isFile());
  });

  it('fails on a directory or a missing parent', async () => {
    await writeTree(area.target, { 'd/': '' });
    await rejectsWith(run(action({ kind: 'mkfile', mkfile: { path: '/d', mode: 0o644, data } })), ERROR_CODES.PATH_EXISTS, '"/d"', area);
    await rejectsWith(run(action({ kind: 'mkfile', mkfile: { path: '/', mode: 0o644, data } })), ERROR_CODES.PATH_EXISTS, '"/"', area);
    await rejectsWith(run(action({ kind: 'mkfile', mkfile: { path: '/no/f', mode: 0o644, data } })), ERROR_CODES.PATH_NOT_FOUND, '"/no/f"', area);
  });
});

describe('rm', () => {
  const rm = (p: string, allowNotFound = false, allowWildcard = false) => run(action({ kind: 'rm', rm: { path: p, allowNotFound, allowWildcard } }));

  it('removes files and directories recursively', async () => {
    await writeTree(area.target, { 'd/e/f': 'x', g: 'y', h: 'z' });
    await rm('/d');
    await rm('g');
    assert.deepEqual(await listTree(area.target), ['h=z']);
  });

  it('removes a symlink, not what it points to', async () => {
    await writeTree(area.target, { 'real/file': 'x', link: { link: '/real' }, 'inner/l': { link: '../real/file' } });
    await rm('/link');
    await rm('/inner');
    assert.deepEqual(await listTree(area.target), ['real/', 'real/file=x']);
  });

  it('fails on a missing path unless allowNotFound', async () => {
    await rejectsWith(rm('/nope'), ERROR_CODES.PATH_NOT_FOUND, '"/nope"', area);
    await rm('/nope', true);
    await rm('/nope/deeper', true);
  });

  it('refuses to remove the root', async () => {
    await writeTree(area.target, { keep: 'x' });
    await rejectsWith(rm('/'), ERROR_CODES.FILE_ACTION, 'root', area);
    await rejectsWith(rm('/a/..'), ERROR_CODES.FILE_ACTION, 'root', area);
    assert.deepEqual(await listTree(area.target), ['keep=x']);
  });

  it('removes every wildcard match, and only with allowWildcard', async () => {
    await writeTree(area.target, { 'a.log': '', 'b.log': '', 'c.txt': '', 'd/x.log': '', 'e/x.log': '', 'e/y.txt': '', '*.log': '' });
    await rm('/*.log', false, false);
    assert.ok(!(await listTree(area.target)).includes('*.log='));
    await rm('/*.log', false, true);
    await rm('/*/x.log', false, true);
    assert.deepEqual(await listTree(area.target), ['c.txt=', 'd/', 'e/', 'e/y.txt=']);
  });

  it('fails when a wildcard matches nothing unless allowNotFound', async () => {
    await rejectsWith(rm('/*.none', false, true), ERROR_CODES.PATH_NOT_FOUND, '"/*.none"', area);
    await rm('/*.none', true, true);
  });
});

describe('symlink', () => {
  it('stores the link target as given, with owner and timestamp on the link itself', async () => {
    await writeTree(area.target, { 'bin/': '' });
    await run(action({ kind: 'symlink', symlink: { oldpath: '../../../etc/x', newpath: '/bin/l', owner: { user: 3, group: 4 }, timestamp: TS } }));
    const p = path.join(area.target, 'bin/l');
    const st = await lstat(p);
    assert.equal(await fs.readlink(p), '../../../etc/x');
    assert.deepEqual([st.uid, st.gid, st.mtimeNs], [3n, 4n, TS]);
  });

  it('fails when the path exists or its parent does not', async () => {
    await writeTree(area.target, { f: '' });
    await rejectsWith(run(action({ kind: 'symlink', symlink: { oldpath: 'x', newpath: '/f' } })), ERROR_CODES.PATH_EXISTS, '"/f"', area);
    await rejectsWith(run(action({ kind: 'symlink', symlink: { oldpath: 'x', newpath: '/no/l' } })), ERROR_CODES.PATH_NOT_FOUND, '"/no/l"', area);
  });
});

describe('applyFileAction', () => {
  it('rethrows the abort reason of an aborted signal', async () => {
    const controller = new AbortController();
    const reason = new Error('cancelled');
    controller.abort(reason);
    await assert.rejects(applyFileAction(action({ kind: 'rm', rm: { path: '/x', allowNotFound: true, allowWildcard: false } }), { target: area.target, signal: controller.signal }), reason);
  });
});
