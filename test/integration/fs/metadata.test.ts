import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { getAttribute, listAttributes, setAttribute } from 'fs-xattr';
import { copyEntry, setTimes } from '../../../src/fs/metadata.js';

const lstat = (p: string) => fs.lstat(p, { bigint: true });

describe('setTimes', () => {
  let dir: string;
  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-times-'));
  });
  after(async () => fs.rm(dir, { recursive: true, force: true }));

  const values: [string, bigint, bigint][] = [
    ['whole seconds', 1_700_000_000_000_000_000n, 1_700_000_000_000_000_000n],
    ['microseconds', 1_700_000_000_123_456_000n, 1_600_000_000_999_999_000n],
    ['nanoseconds', 1_700_000_000_123_456_789n, 1_700_000_000_123_456_789n],
    ['different nanoseconds', 1_700_000_000_000_000_001n, 1_500_000_000_987_654_321n],
    ['before 1970', -1_500_000_001n, -86_400_000_000_000n],
  ];
  for (const [what, atime, mtime] of values) {
    it(`sets ${what} exactly, on a file and on a symlink itself`, async () => {
      const file = path.join(dir, `f-${what}`);
      const link = path.join(dir, `l-${what}`);
      await fs.writeFile(file, '');
      await fs.symlink(file, link);
      await setTimes(file, atime, mtime);
      await setTimes(link, mtime, atime);
      const f = await lstat(file);
      const l = await lstat(link);
      assert.deepEqual([f.atimeNs, f.mtimeNs], [atime, mtime]);
      assert.deepEqual([l.atimeNs, l.mtimeNs], [mtime, atime]);
      // The link's target kept its own times.
      assert.deepEqual([(await lstat(file)).mtimeNs], [mtime]);
    });
  }
});

describe('copyEntry', () => {
  let base: string;
  let src: string;
  let dest: string;
  before(async () => {
    base = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-meta-'));
    src = path.join(base, 'src');
    dest = path.join(base, 'dest');
    await fs.mkdir(src);
    await fs.mkdir(dest);
  });
  after(async () => fs.rm(base, { recursive: true, force: true }));

  it('copies a regular file with content, setuid mode, owner, µs times and xattrs', async () => {
    const s = path.join(src, 'tool');
    await fs.writeFile(s, 'binary');
    await fs.chown(s, 1234, 5678);
    await fs.chmod(s, 0o4751);
    await setAttribute(s, 'user.kiln.test', 'hello');
    await setAttribute(s, 'trusted.overlay.opaque', 'y');
    await setTimes(s, 1_600_000_000_111_222_333n, 1_650_000_000_444_555_666n);
    const d = path.join(dest, 'tool');
    await copyEntry(s, d, await lstat(s));
    const st = await lstat(d);
    assert.equal(await fs.readFile(d, 'utf8'), 'binary');
    assert.equal(Number(st.mode) & 0o7777, 0o4751);
    assert.deepEqual([st.uid, st.gid], [1234n, 5678n]);
    assert.equal(st.mtimeNs, 1_650_000_000_444_555_000n);
    assert.equal(st.atimeNs, 1_600_000_000_111_222_000n);
    assert.equal((await getAttribute(d, 'user.kiln.test')).toString(), 'hello');
    assert.ok(!(await listAttributes(d)).includes('trusted.overlay.opaque'));
  });

  it('applies overrides: owner, a mode function and an exact timestamp', async () => {
    const s = path.join(src, 'plain');
    await fs.writeFile(s, 'x');
    await fs.chmod(s, 0o640);
    const d = path.join(dest, 'plain');
    await copyEntry(s, d, await lstat(s), {
      owner: { uid: 42, gid: 43 },
      mode: (m, isDir) => (isDir ? 0 : m | 0o111),
      timestamp: 1_234_567_890_123_456_789n,
    });
    const st = await lstat(d);
    assert.deepEqual([st.uid, st.gid, Number(st.mode) & 0o7777], [42n, 43n, 0o751]);
    assert.deepEqual([st.atimeNs, st.mtimeNs], [1_234_567_890_123_456_789n, 1_234_567_890_123_456_789n]);
  });

  it('creates a directory with its sticky mode and owner, or merges into an existing one', async () => {
    const s = path.join(src, 'tmp');
    await fs.mkdir(s);
    await fs.chmod(s, 0o1777);
    await fs.chown(s, 7, 8);
    const d = path.join(dest, 'tmp');
    await copyEntry(s, d, await lstat(s));
    let st = await lstat(d);
    assert.ok(st.isDirectory());
    assert.deepEqual([Number(st.mode) & 0o7777, st.uid, st.gid], [0o1777, 7n, 8n]);
    await fs.chmod(d, 0o700);
    await fs.writeFile(path.join(d, 'kept'), '');
    await copyEntry(s, d, await lstat(s));
    st = await lstat(d);
    assert.equal(Number(st.mode) & 0o7777, 0o1777);
    assert.deepEqual(await fs.readdir(d), ['kept']);
  });

  it('refuses to write through anything already at the destination', async () => {
    const s = path.join(src, 'victim-src');
    await fs.writeFile(s, 'new');
    const sentinel = path.join(base, 'sentinel');
    await fs.writeFile(sentinel, 'untouched');
    const d = path.join(dest, 'victim');
    await fs.symlink(sentinel, d);
    await assert.rejects(copyEntry(s, d, await lstat(s)), { code: 'EEXIST' });
    assert.equal(await fs.readFile(sentinel, 'utf8'), 'untouched');
  });

  it('recreates a symlink with the same target text and its owner, without touching the target', async () => {
    const target = path.join(src, 'tool');
    const before = await lstat(target);
    const s = path.join(src, 'link');
    await fs.symlink('/etc/../tool', s);
    await fs.lchown(s, 99, 98);
    await setTimes(s, 1_000_000_000_000_000_000n, 1_000_000_000_000_000_000n);
    const d = path.join(dest, 'link');
    await copyEntry(s, d, await lstat(s));
    const st = await lstat(d);
    assert.ok(st.isSymbolicLink());
    assert.equal(await fs.readlink(d), '/etc/../tool');
    assert.deepEqual([st.uid, st.gid, st.mtimeNs], [99n, 98n, 1_000_000_000_000_000_000n]);
    assert.equal((await lstat(target)).ctimeNs, before.ctimeNs);
  });

  it('keeps hard links together through a shared map', async () => {
    const a = path.join(src, 'h1');
    const b = path.join(src, 'h2');
    await fs.writeFile(a, 'shared');
    await fs.link(a, b);
    const hardlinks = new Map<string, string>();
    await copyEntry(a, path.join(dest, 'h1'), await lstat(a), { hardlinks });
    await copyEntry(b, path.join(dest, 'h2'), await lstat(b), { hardlinks });
    const [s1, s2] = await Promise.all([lstat(path.join(dest, 'h1')), lstat(path.join(dest, 'h2'))]);
    assert.equal(s1.ino, s2.ino);
    assert.notEqual(s1.ino, (await lstat(a)).ino);
    assert.equal(s1.nlink, 2n);
  });

  it('recreates fifos and device nodes, and skips sockets', async () => {
    const fifo = path.join(src, 'fifo');
    await execa('mkfifo', ['-m', '0620', fifo]);
    await copyEntry(fifo, path.join(dest, 'fifo'), await lstat(fifo));
    const f = await lstat(path.join(dest, 'fifo'));
    assert.ok(f.isFIFO());
    assert.equal(Number(f.mode) & 0o7777, 0o620);

    const dev = path.join(src, 'null');
    await execa('mknod', [dev, 'c', '1', '3']);
    await copyEntry(dev, path.join(dest, 'null'), await lstat(dev));
    const d = await lstat(path.join(dest, 'null'));
    assert.ok(d.isCharacterDevice());
    assert.equal(d.rdev, (await lstat(dev)).rdev);

    const sock = path.join(src, 'sock');
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    try {
      await copyEntry(sock, path.join(dest, 'sock'), await lstat(sock));
    } finally {
      server.close();
    }
    await assert.rejects(fs.lstat(path.join(dest, 'sock')), { code: 'ENOENT' });
  });
});
