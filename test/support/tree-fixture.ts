/**
 * A directory tree with every kind of entry and metadata a copy or an archive
 * must keep, and a description of a tree to compare two of them by. Used by
 * the exporter tests and the local source tests. Needs root (chown, mknod).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { listAttributes, getAttribute, setAttribute } from 'fs-xattr';

/** A fresh temp dir; remove it with `fs.rm(dir, { recursive: true, force: true })`. */
export function tempDir(): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), 'kiln-exporter-'));
}

/** A name longer than ustar's 100 bytes, below a dir, to force the pax `path` record. */
export const LONG_NAME = `deep/${'n'.repeat(120)}.txt`;

/** An xattr value that is not valid UTF-8 (as security.capability values are not). */
export const BINARY_XATTR = Uint8Array.from([0x01, 0x80, 0xff, 0x00, 0xc3]);

/** Sets an entry's mtime (and atime) to the exact nanosecond, without following symlinks. */
export async function setTime(file: string, seconds: number, nanos: number): Promise<void> {
  await execa('touch', ['-h', '-d', `@${seconds}.${String(nanos).padStart(9, '0')}`, file]);
}

/**
 * Fills `root` with: dirs with unusual modes and owners, regular files (empty,
 * 1 MiB, setuid, owned by ids too big for ustar), xattrs (text and binary),
 * a hardlink pair, symlinks (with their own owner, dangling, with a long
 * target), a fifo, a char device, a long name and a non-ASCII name, all with
 * nanosecond mtimes.
 */
export async function makeRichTree(root: string): Promise<void> {
  const p = (rel: string): string => path.join(root, rel);
  await fs.mkdir(p('a/sub'), { recursive: true });
  await fs.mkdir(p('deep'));
  await fs.mkdir(p('shared'));
  await fs.writeFile(p('a/file.txt'), 'hello kiln\n');
  await fs.writeFile(p('a/sub/empty'), '');
  await fs.writeFile(p('big.bin'), createHash('sha512').update('seed').digest().toString('hex').repeat(8192));
  await fs.writeFile(p('setuid-tool'), '#!/bin/sh\n');
  await fs.writeFile(p(LONG_NAME), 'long\n');
  await fs.writeFile(p('ünïcödé.txt'), 'utf-8 name\n');
  await fs.link(p('a/file.txt'), p('a/hardlink'));
  await fs.symlink('a/file.txt', p('link'));
  await fs.symlink('/does/not/exist', p('dangling'));
  await fs.symlink(`${'t'.repeat(150)}/target`, p('long-link'));
  await fs.writeFile(p('big-ids'), 'ids beyond ustar\'s 7 octal digits\n');
  await fs.chown(p('big-ids'), 3_000_000, 4_000_000);
  await execa('mkfifo', [p('fifo')]);
  await execa('mknod', [p('null-device'), 'c', '1', '3']);

  await fs.chmod(p('a'), 0o750);
  await fs.chown(p('a'), 1000, 1001);
  await fs.chmod(p('a/file.txt'), 0o640);
  await fs.chown(p('a/file.txt'), 1234, 5678);
  await fs.chmod(p('setuid-tool'), 0o4755);
  await fs.chmod(p('shared'), 0o1777);
  await fs.lchown(p('link'), 42, 43);
  await setAttribute(p('a/file.txt'), 'user.kiln.text', 'some text');
  await setAttribute(p('a/file.txt'), 'user.kiln.binary', Buffer.from(BINARY_XATTR));
  await setAttribute(p('a/sub'), 'user.kiln.dir', 'on a dir');

  // Children first: setting a child's time does not touch its parent's, but creating it does.
  const all = ['a/file.txt', 'a/sub/empty', 'big.bin', 'big-ids', 'long-link', 'setuid-tool', LONG_NAME, 'ünïcödé.txt', 'link', 'dangling', 'fifo', 'null-device', 'a/sub', 'deep', 'shared', 'a'];
  for (const [i, rel] of all.entries()) await setTime(p(rel), 1_600_000_000 + i, 123_456_789 + i);
}

/** What a copy of an entry must keep. */
export interface EntryDescription {
  readonly type: string;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly mtimeNs: bigint;
  /** File content hash, symlink target or device number. */
  readonly content: string;
  /** xattr name → hex value (not for symlinks). */
  readonly xattrs: Readonly<Record<string, string>>;
  /** For files with several links: the other paths in the tree sharing the inode. */
  readonly linkedWith: readonly string[];
}

/** Every entry below `root` (not `root` itself) by relative path. */
export async function describeTree(root: string): Promise<Map<string, EntryDescription>> {
  const stats = new Map<string, import('node:fs').BigIntStats>();
  const visit = async (rel: string): Promise<void> => {
    for (const name of await fs.readdir(path.join(root, rel))) {
      const child = rel === '' ? name : `${rel}/${name}`;
      const s = await fs.lstat(path.join(root, child), { bigint: true });
      stats.set(child, s);
      if (s.isDirectory()) await visit(child);
    }
  };
  await visit('');

  const result = new Map<string, EntryDescription>();
  for (const [rel, s] of [...stats].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const file = path.join(root, rel);
    let type = 'other';
    let content = '';
    if (s.isFile()) {
      type = 'file';
      content = createHash('sha256').update(await fs.readFile(file)).digest('hex');
    } else if (s.isDirectory()) type = 'dir';
    else if (s.isSymbolicLink()) {
      type = 'symlink';
      content = await fs.readlink(file);
    } else if (s.isFIFO()) type = 'fifo';
    else if (s.isCharacterDevice()) {
      type = 'char';
      content = String(s.rdev);
    }
    const xattrs: Record<string, string> = {};
    if (!s.isSymbolicLink()) {
      for (const name of (await listAttributes(file)).sort()) xattrs[name] = (await getAttribute(file, name)).toString('hex');
    }
    const linkedWith = s.isFile() && s.nlink > 1n ? [...stats].filter(([other, o]) => other !== rel && o.ino === s.ino).map(([other]) => other) : [];
    result.set(rel, { type, mode: Number(s.mode & 0o7777n), uid: Number(s.uid), gid: Number(s.gid), mtimeNs: s.mtimeNs, content, xattrs, linkedWith });
  }
  return result;
}
