import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { getAttribute, setAttribute } from 'fs-xattr';
import { ERROR_CODES } from '../../../src/errors.js';
import { setTimes } from '../../../src/fs/metadata.js';
import type { CopyAction } from '../../../src/llb/types.js';
import { applyFileAction } from '../../../src/ops/file/apply.js';
import type { Area } from '../../unit/file-op/fixture.js';
import { copyAction, listTree, makeArea, rejectsWith, writeTree } from '../../unit/file-op/fixture.js';

const TS = 1_600_000_000_987_654_321n;
const lstat = (p: string) => fs.lstat(p, { bigint: true });
const modeOf = async (p: string) => Number((await lstat(p)).mode) & 0o7777;

let area: Area;
beforeEach(async () => {
  area = await makeArea();
  await writeTree(area.source, {
    'file.txt': 'F',
    'app/main.go': 'M',
    'app/lib/util.go': 'U',
    'app/lib/util_test.go': 'T',
    'app/README.md': 'R',
    'app/empty/': '',
    'link-to-app': { link: 'app' },
    'logs/a.log': 'A',
    'logs/b.log': 'B',
    'logs/c.txt': 'C',
  });
});
afterEach(async () => area.dispose());

const copy = (fields: Partial<CopyAction> & Pick<CopyAction, 'src' | 'dest'>) =>
  applyFileAction(copyAction(fields), { target: area.target, source: area.source });
const target = (p = '') => listTree(path.join(area.target, p));

describe('copy: where things land', () => {
  it('copies a file to a new name', async () => {
    await copy({ src: '/file.txt', dest: '/renamed' });
    assert.deepEqual(await target(), ['renamed=F']);
  });

  it('copies a file into an existing directory, and into a dest ending in "/"', async () => {
    await writeTree(area.target, { 'd/': '' });
    await copy({ src: 'file.txt', dest: '/d' });
    await copy({ src: 'file.txt', dest: '/new/' });
    assert.deepEqual(await target(), ['d/', 'd/file.txt=F', 'new/', 'new/file.txt=F']);
  });

  it('copies a directory to a new name, or under its name into an existing directory', async () => {
    await copy({ src: '/app/lib', dest: '/lib2' });
    await writeTree(area.target, { 'into/': '' });
    await copy({ src: '/app/lib', dest: '/into' });
    assert.deepEqual(await target(), ['into/', 'into/lib/', 'into/lib/util.go=U', 'into/lib/util_test.go=T', 'lib2/', 'lib2/util.go=U', 'lib2/util_test.go=T']);
  });

  it('merges a directory\'s contents with dirCopyContents, replacing files and keeping others', async () => {
    await writeTree(area.target, { 'srv/main.go': 'old', 'srv/keep': 'K' });
    await copy({ src: '/app', dest: '/srv', dirCopyContents: true });
    assert.deepEqual(await target('srv'), ['README.md=R', 'empty/', 'keep=K', 'lib/', 'lib/util.go=U', 'lib/util_test.go=T', 'main.go=M']);
  });

  it('creates a missing dest directory for dirCopyContents', async () => {
    await copy({ src: '/app/lib', dest: '/fresh', dirCopyContents: true });
    assert.deepEqual(await target(), ['fresh/', 'fresh/util.go=U', 'fresh/util_test.go=T']);
  });

  it('copies the whole source root into "/"', async () => {
    await copy({ src: '/', dest: '/', dirCopyContents: true });
    assert.deepEqual(await target(), await listTree(area.source));
  });

  it('needs the dest parent unless createDestPath, which makes it 0755 with the owner and time', async () => {
    await rejectsWith(copy({ src: '/file.txt', dest: '/a/b/c' }), ERROR_CODES.PATH_NOT_FOUND, '"/a/b/c"', area);
    await copy({ src: '/file.txt', dest: '/a/b/c', createDestPath: true, owner: { user: 9, group: 10 }, timestamp: TS });
    for (const dir of ['a', 'a/b']) {
      const st = await lstat(path.join(area.target, dir));
      assert.deepEqual([Number(st.mode) & 0o7777, st.uid, st.gid, st.mtimeNs], [0o755, 9n, 10n, TS], dir);
    }
    assert.deepEqual(await target(), ['a/', 'a/b/', 'a/b/c=F']);
  });

  it('fails on a missing source', async () => {
    await rejectsWith(copy({ src: '/nope', dest: '/x' }), ERROR_CODES.PATH_NOT_FOUND, '"/nope"', area);
  });
});

describe('copy: symlinks', () => {
  it('copies a final symlink as a link unless followSymlink', async () => {
    await copy({ src: '/link-to-app', dest: '/as-link' });
    await copy({ src: '/link-to-app', dest: '/followed', followSymlink: true });
    assert.equal(await fs.readlink(path.join(area.target, 'as-link')), 'app');
    assert.deepEqual(await target('followed'), ['README.md=R', 'empty/', 'lib/', 'lib/util.go=U', 'lib/util_test.go=T', 'main.go=M']);
  });

  it('names a followed link by its own name inside an existing dir', async () => {
    await writeTree(area.target, { 'd/': '' });
    await copy({ src: '/link-to-app/lib', dest: '/d' });
    await copy({ src: '/link-to-app', dest: '/d', followSymlink: true });
    assert.ok((await target('d')).includes('lib/util.go=U'));
    assert.ok((await target('d')).includes('link-to-app/main.go=M'));
  });

  it('keeps symlinks inside a copied tree as links', async () => {
    await writeTree(area.source, { 'tree/abs': { link: '/etc/passwd' }, 'tree/rel': { link: '../file.txt' } });
    await copy({ src: '/tree', dest: '/tree' });
    assert.deepEqual(await target(), ['tree/', 'tree/abs -> /etc/passwd', 'tree/rel -> ../file.txt']);
  });
});

describe('copy: wildcards', () => {
  it('copies every match into a dest directory', async () => {
    await copy({ src: '/logs/*.log', dest: '/out/', allowWildcard: true });
    assert.deepEqual(await target(), ['out/', 'out/a.log=A', 'out/b.log=B']);
  });

  it('copies each match as if it were the only source, as BuildKit does: the last file wins a dest that is no directory', async () => {
    await copy({ src: '/logs/*.log', dest: '/out', allowWildcard: true });
    assert.deepEqual(await target(), ['out=B']);
  });

  it('keeps hard links within one match, not across matches, as BuildKit does', async () => {
    await fs.link(path.join(area.source, 'logs/a.log'), path.join(area.source, 'logs/a-too.log'));
    await fs.link(path.join(area.source, 'logs/b.log'), path.join(area.source, 'file-b.log'));
    await writeTree(area.source, { 'logs/sub/': '' });
    await fs.link(path.join(area.source, 'logs/c.txt'), path.join(area.source, 'logs/sub/c-too.txt'));
    await copy({ src: '/*', dest: '/out/', allowWildcard: true });
    const ino = async (rel: string) => (await lstat(path.join(area.target, 'out', rel))).ino;
    assert.equal(await ino('logs/a.log'), await ino('logs/a-too.log'), 'within the logs match');
    assert.equal(await ino('logs/c.txt'), await ino('logs/sub/c-too.txt'));
    assert.notEqual(await ino('logs/b.log'), await ino('file-b.log'), 'across two matches');
  });

  it('copies a single match like a plain path', async () => {
    await copy({ src: '/logs/a.*', dest: '/one.log', allowWildcard: true });
    assert.deepEqual(await target(), ['one.log=A']);
  });

  it('matches directories in the middle of the path', async () => {
    await copy({ src: '/a*/lib/*_test.go', dest: '/t/', allowWildcard: true });
    assert.deepEqual(await target(), ['t/', 't/util_test.go=T']);
  });

  it('reads "*" literally without allowWildcard', async () => {
    await rejectsWith(copy({ src: '/logs/*.log', dest: '/out' }), ERROR_CODES.PATH_NOT_FOUND, '"/logs/*.log"', area);
  });

  it('fails when nothing matches, unless allowEmptyWildcard', async () => {
    await rejectsWith(copy({ src: '/*.none', dest: '/x', allowWildcard: true }), ERROR_CODES.PATH_NOT_FOUND, '"/*.none"', area);
    await copy({ src: '/*.none', dest: '/x', allowWildcard: true, allowEmptyWildcard: true });
    assert.deepEqual(await target(), []);
  });
});

describe('copy: include and exclude patterns', () => {
  it('selects paths relative to the copied directory, without empty leading dirs', async () => {
    await copy({ src: '/app', dest: '/go', includePatterns: ['**/*.go'], excludePatterns: ['**/*_test.go'] });
    assert.deepEqual(await target('go'), ['lib/', 'lib/util.go=U', 'main.go=M']);
  });

  it('honours exceptions under an excluded directory', async () => {
    await copy({ src: '/app', dest: '/x', excludePatterns: ['lib', '!lib/util.go', 'empty'] });
    assert.deepEqual(await target('x'), ['README.md=R', 'lib/', 'lib/util.go=U', 'main.go=M']);
  });
});

describe('copy: metadata', () => {
  it('keeps modes, owners, xattrs, ns times and hard links of the source (a plain copy: cp -a)', async () => {
    const main = path.join(area.source, 'app/main.go');
    await fs.chown(main, 100, 200); // before chmod: chown clears setgid
    await fs.chmod(main, 0o2751);
    await setAttribute(main, 'user.origin', 'src');
    await setTimes(main, 1_500_000_000_000_001_999n, 1_500_000_000_123_456_789n);
    await fs.link(main, path.join(area.source, 'app/main-link.go'));
    await fs.chmod(path.join(area.source, 'app/lib'), 0o750);
    await setTimes(path.join(area.source, 'app/lib'), TS, TS);
    await copy({ src: '/app', dest: '/app' });
    const st = await lstat(path.join(area.target, 'app/main.go'));
    assert.deepEqual([Number(st.mode) & 0o7777, st.uid, st.gid, st.mtimeNs, st.atimeNs], [0o2751, 100n, 200n, 1_500_000_000_123_456_789n, 1_500_000_000_000_001_999n]);
    assert.equal((await getAttribute(path.join(area.target, 'app/main.go'), 'user.origin')).toString(), 'src');
    assert.equal((await lstat(path.join(area.target, 'app/main-link.go'))).ino, st.ino);
    const lib = await lstat(path.join(area.target, 'app/lib'));
    assert.deepEqual([Number(lib.mode) & 0o7777, lib.mtimeNs], [0o750, TS]);
  });

  it('keeps the same metadata, times to the µs, when copying entry by entry (with a pattern)', async () => {
    const main = path.join(area.source, 'app/main.go');
    await fs.chown(main, 100, 200);
    await fs.chmod(main, 0o2751);
    await setAttribute(main, 'user.origin', 'src');
    await setTimes(main, 1_500_000_000_000_001_999n, 1_500_000_000_123_456_789n);
    await fs.link(main, path.join(area.source, 'app/main-link.go'));
    await copy({ src: '/app', dest: '/app', excludePatterns: ['nothing'] });
    const st = await lstat(path.join(area.target, 'app/main.go'));
    assert.deepEqual([Number(st.mode) & 0o7777, st.uid, st.gid, st.mtimeNs], [0o2751, 100n, 200n, 1_500_000_000_123_456_000n]);
    assert.equal((await getAttribute(path.join(area.target, 'app/main.go'), 'user.origin')).toString(), 'src');
    assert.equal((await lstat(path.join(area.target, 'app/main-link.go'))).ino, st.ino);
  });

  it('skips sockets in a plain copy, and the directory holding one keeps the source\'s times', async () => {
    const dir = path.join(area.source, 'app/lib');
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(path.join(dir, 'sock'), resolve));
    try {
      await setTimes(dir, TS, TS);
      await copy({ src: '/app', dest: '/app' });
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
    assert.deepEqual(await target('app/lib'), ['util.go=U', 'util_test.go=T']);
    assert.equal((await lstat(path.join(area.target, 'app/lib'))).mtimeNs, TS);
  });

  it('applies owner by name from the target, a chmod expression and a timestamp to every entry', async () => {
    await writeTree(area.target, { 'etc/passwd': 'app:x:1000:1001::/:/bin/sh\n', 'etc/group': 'app:x:1001:\n' });
    await fs.chmod(path.join(area.source, 'app/main.go'), 0o700);
    await copy({ src: '/app', dest: '/srv', owner: { user: 'app' }, mode: { kind: 'chmod', expr: 'go+rX,o-w' }, timestamp: TS });
    const entries = ['srv', 'srv/main.go', 'srv/lib', 'srv/lib/util.go', 'srv/empty'];
    const got = await Promise.all(entries.map(async (e) => {
      const st = await lstat(path.join(area.target, e));
      return [e, (Number(st.mode) & 0o7777).toString(8), st.uid, st.gid, st.mtimeNs, st.atimeNs];
    }));
    const srcMode = async (e: string) => modeOf(path.join(area.source, e.replace(/^srv/, 'app')));
    const expectMode = async (e: string, isDir: boolean) => {
      const m = await srcMode(e);
      return (((m | 0o044) | (isDir || (m & 0o111) !== 0 ? 0o011 : 0)) & ~0o002).toString(8);
    };
    assert.deepEqual(got, [
      ['srv', await expectMode('srv', true), 1000n, 1001n, TS, TS],
      ['srv/main.go', '755', 1000n, 1001n, TS, TS],
      ['srv/lib', await expectMode('srv/lib', true), 1000n, 1001n, TS, TS],
      ['srv/lib/util.go', await expectMode('srv/lib/util.go', false), 1000n, 1001n, TS, TS],
      ['srv/empty', await expectMode('srv/empty', true), 1000n, 1001n, TS, TS],
    ]);
  });

  it('sets mode bits on files and directories but not on symlinks', async () => {
    await copy({ src: '/', dest: '/all', mode: { kind: 'bits', bits: 0o640 } });
    assert.equal(await modeOf(path.join(area.target, 'all/app/main.go')), 0o640);
    assert.equal(await modeOf(path.join(area.target, 'all/app')), 0o640);
    assert.ok((await lstat(path.join(area.target, 'all/link-to-app'))).isSymbolicLink());
  });

  it('keeps the metadata of an existing top-level dest directory it merges into', async () => {
    await writeTree(area.target, { 'srv/': '' });
    await fs.chmod(path.join(area.target, 'srv'), 0o711);
    await copy({ src: '/app', dest: '/srv', dirCopyContents: true });
    assert.equal(await modeOf(path.join(area.target, 'srv')), 0o711);
  });

  it('keeps the owner and mode of an existing top-level dest directory but gives it the source directory\'s times', async () => {
    await writeTree(area.target, { 'srv/': '' });
    await fs.chmod(path.join(area.target, 'srv'), 0o711);
    await setTimes(path.join(area.source, 'app'), TS, TS);
    await copy({ src: '/app', dest: '/srv', dirCopyContents: true, owner: { user: 7 } });
    const st = await lstat(path.join(area.target, 'srv'));
    assert.deepEqual([Number(st.mode) & 0o7777, st.uid, st.mtimeNs], [0o711, 0n, TS - 321n]);
  });

  it('rejects a bad chmod expression', async () => {
    await rejectsWith(copy({ src: '/file.txt', dest: '/f', mode: { kind: 'chmod', expr: 'u+q' } }), ERROR_CODES.FILE_ACTION, '"u+q"', area);
  });
});

/**
 * The directories a copy makes and the one it lands in, for every
 * combination of dirCopyContents, an existing dest and a dest ending in
 * "/", as BuildKit's file op (fsutil's copy) leaves them: directories made
 * on the way take the copy's owner and, when the mode is bits, its
 * permission bits (else 0755); a directory made to hold a directory's
 * contents is one of those; a directory copied under a new name is a copy
 * of the source and takes the mode like every copied entry.
 */
describe('copy: directories it makes, as BuildKit makes them', () => {
  const CHOWN = { user: 1000, group: 1000 };
  const MODE = { kind: 'bits', bits: 0o2640 } as const;
  const meta = async (rel: string) => {
    const st = await lstat(path.join(area.target, rel));
    return `${rel} ${(Number(st.mode) & 0o7777).toString(8)} ${st.uid}:${st.gid}`;
  };
  const metas = (...rels: string[]) => Promise.all(rels.map(meta));
  beforeEach(async () => {
    await fs.chmod(path.join(area.source, 'app'), 0o750);
    await setTimes(path.join(area.source, 'app'), TS, TS);
  });

  it('COPY --chown=1000:1000 --chmod=0640 dir/ /dst/dir/ gives /dst and /dst/dir mode 0640 and the owner', async () => {
    await copy({ src: '/app', dest: '/dst/dir/', dirCopyContents: true, createDestPath: true, owner: CHOWN, mode: { kind: 'bits', bits: 0o640 } });
    assert.deepEqual(await metas('dst', 'dst/dir', 'dst/dir/lib', 'dst/dir/main.go'), [
      'dst 640 1000:1000', 'dst/dir 640 1000:1000', 'dst/dir/lib 640 1000:1000', 'dst/dir/main.go 640 1000:1000',
    ]);
    // The directory made for the contents takes the source directory's times.
    assert.equal((await lstat(path.join(area.target, 'dst/dir'))).mtimeNs, TS - 321n);
  });

  for (const slash of ['', '/']) {
    it(`dirCopyContents into a new "/dst/dir${slash}": made with the copy's mode bits (not setgid) and owner`, async () => {
      await copy({ src: '/app', dest: `/dst/dir${slash}`, dirCopyContents: true, createDestPath: true, owner: CHOWN, mode: MODE });
      assert.deepEqual(await metas('dst', 'dst/dir', 'dst/dir/lib'), ['dst 640 1000:1000', 'dst/dir 640 1000:1000', 'dst/dir/lib 2640 1000:1000']);
    });

    it(`a directory to a new "/dst/dir${slash}" without dirCopyContents`, async () => {
      await copy({ src: '/app', dest: `/dst/dir${slash}`, createDestPath: true, owner: CHOWN, mode: MODE });
      // With a slash the dest is made first and the directory goes under it by its name.
      const copied = slash === '' ? 'dst/dir' : 'dst/dir/app';
      const expected = slash === '' ? ['dst 640 1000:1000', 'dst/dir 2640 1000:1000'] : ['dst 640 1000:1000', 'dst/dir 640 1000:1000', 'dst/dir/app 2640 1000:1000'];
      assert.deepEqual(await metas(...(slash === '' ? ['dst', copied] : ['dst', 'dst/dir', copied])), expected);
    });

    it(`into an existing "/dst/dir${slash}": the dest keeps its owner and mode`, async () => {
      await writeTree(area.target, { 'dst/dir/': '' });
      await fs.chmod(path.join(area.target, 'dst/dir'), 0o711);
      await copy({ src: '/app', dest: `/dst/dir${slash}`, dirCopyContents: true, owner: CHOWN, mode: MODE });
      await copy({ src: '/app', dest: `/dst/dir${slash}`, owner: CHOWN, mode: MODE });
      assert.deepEqual(await metas('dst/dir', 'dst/dir/lib', 'dst/dir/app'), ['dst/dir 711 0:0', 'dst/dir/lib 2640 1000:1000', 'dst/dir/app 2640 1000:1000']);
    });
  }

  it('a chmod expression leaves the directories made on the way at 0755', async () => {
    await copy({ src: '/app', dest: '/dst/dir/', dirCopyContents: true, createDestPath: true, owner: CHOWN, mode: { kind: 'chmod', expr: 'go-rwx' } });
    assert.deepEqual(await metas('dst', 'dst/dir', 'dst/dir/lib'), ['dst 755 1000:1000', 'dst/dir 755 1000:1000', `dst/dir/lib ${((await modeOf(path.join(area.source, 'app/lib'))) & 0o700).toString(8)} 1000:1000`]);
  });

  it('a file into a new directory: the directory takes the mode bits', async () => {
    await copy({ src: '/file.txt', dest: '/new/', createDestPath: true, mode: { kind: 'bits', bits: 0o600 } });
    assert.deepEqual(await metas('new', 'new/file.txt'), ['new 600 0:0', 'new/file.txt 600 0:0']);
  });

  it('without a mode, directories made on the way are 0755 and the copied directory keeps the source\'s', async () => {
    await copy({ src: '/app', dest: '/dst/dir', createDestPath: true });
    await copy({ src: '/app', dest: '/dst2/dir/', dirCopyContents: true, createDestPath: true });
    assert.deepEqual(await metas('dst', 'dst/dir', 'dst2', 'dst2/dir'), ['dst 755 0:0', 'dst/dir 750 0:0', 'dst2 755 0:0', 'dst2/dir 755 0:0']);
  });
});

describe('copy: conflicts', () => {
  beforeEach(async () => {
    await writeTree(area.target, { 'dst/lib': 'a file where the source has a directory', 'dst/main.go/': '' });
  });

  it('fails on a directory over a file and a file over a directory', async () => {
    await rejectsWith(copy({ src: '/app/lib', dest: '/dst/lib' }), ERROR_CODES.NOT_A_DIRECTORY, '/dst/lib', area);
    await rejectsWith(copy({ src: '/app', dest: '/dst', dirCopyContents: true }), ERROR_CODES.NOT_A_DIRECTORY, '"/dst/lib"', area);
    await writeTree(area.target, { 'dst2/main.go/x': '' });
    await rejectsWith(copy({ src: '/app', dest: '/dst2', dirCopyContents: true, excludePatterns: ['lib'] }), ERROR_CODES.PATH_EXISTS, '"/dst2/main.go"', area);
  });

  it('replaces what is in the way with alwaysReplaceExistingDestPaths', async () => {
    await copy({ src: '/app', dest: '/dst', dirCopyContents: true, alwaysReplaceExistingDestPaths: true });
    assert.deepEqual(await target('dst'), ['README.md=R', 'empty/', 'lib/', 'lib/util.go=U', 'lib/util_test.go=T', 'main.go=M']);
  });
});
