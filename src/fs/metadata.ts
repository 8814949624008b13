/**
 * Faithful copies of single filesystem entries: content (reflinked where the
 * filesystem can), owner, mode bits including setuid/setgid/sticky, extended
 * attributes and timestamps, and hardlinks kept together.
 *
 * Nothing here follows a symlink at the destination: files are created with
 * O_EXCL, owners and times are set with the `l*` calls, and mode and xattrs
 * are never applied to a symlink (chmod and fs-xattr would follow it).
 */
import type { BigIntStats } from 'node:fs';
import { chmodSync, constants as fsConstants, copyFileSync, lchownSync, lutimesSync, readlinkSync, symlinkSync } from 'node:fs';
import fs from 'node:fs/promises';
import { xattrSync } from './xattr.js';

const NS_PER_US = 1000n;
const NS_PER_S = 1_000_000_000n;
/** Regular files up to this size are copied with one synchronous call (see {@link copyEntry}). */
export const SYNC_COPY_MAX_BYTES = 64n * 1024n;
/** Permission bits plus setuid, setgid and sticky. */
const MODE_BITS = 0o7777;

/** A numeric owner. */
export interface OwnerIds {
  readonly uid: number;
  readonly gid: number;
}

/** What a copy sets instead of the source's own metadata. */
export interface MetadataOverrides {
  /** Owner of every copied entry (default: the source's). */
  readonly owner?: OwnerIds;
  /** New mode bits (07777) from the source's bits; not applied to symlinks. */
  readonly mode?: (sourceMode: number, isDir: boolean) => number;
  /** atime and mtime of every copied entry, Unix nanoseconds (default: the source's). */
  readonly timestamp?: bigint;
}

/** Options of {@link copyEntry}. */
export interface CopyEntryOptions extends MetadataOverrides {
  /**
   * Shared by all copyEntry calls of one tree copy: maps a multiply-linked
   * source file (`dev:ino`) to its first copy, so later names become hard
   * links to that copy instead of separate files.
   */
  readonly hardlinks?: Map<string, string>;
}

function errnoOf(err: unknown): string | undefined {
  return err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

/** Round down to a whole microsecond (toward -infinity, also before 1970). */
export function floorToMicros(ns: bigint): bigint {
  return ns - (((ns % NS_PER_US) + NS_PER_US) % NS_PER_US);
}

/**
 * The number of seconds that Node's utimes family turns into exactly `ns`,
 * or undefined when there is none. libuv converts the double to a timespec
 * and then drops everything below the microsecond, so only whole
 * microseconds are reachable, and Node reads a negative time as "now".
 * Half a microsecond is added so the rounding error of the double cannot
 * push the value into the previous microsecond (the conversion truncates);
 * the conversion is replayed here to be sure rather than hopeful.
 */
function utimesSeconds(ns: bigint): number | undefined {
  if (ns < 0n || ns % NS_PER_US !== 0n) return undefined;
  const seconds = Number(ns / NS_PER_US) / 1e6 + 0.5e-6;
  const sec = Math.trunc(seconds);
  const nsec = Math.trunc((seconds - sec) * 1e9);
  return BigInt(sec) * NS_PER_S + BigInt(nsec - (nsec % 1000)) === ns ? seconds : undefined;
}

/** `-1500000000n` -> `"-1.500000000"`: the decimal seconds GNU touch's `-d @S` reads to the nanosecond. */
function touchSeconds(ns: bigint): string {
  const abs = ns < 0n ? -ns : ns;
  return `${ns < 0n ? '-' : ''}${abs / NS_PER_S}.${(abs % NS_PER_S).toString().padStart(9, '0')}`;
}

/**
 * Sets atime and mtime of `path` (a symlink itself, never its target),
 * exactly to the nanosecond. Whole microseconds go through `fs.lutimes`;
 * anything finer cannot (libuv drops it), so it costs one `touch` process.
 */
export async function setTimes(path: string, atimeNs: bigint, mtimeNs: bigint): Promise<void> {
  const atime = utimesSeconds(atimeNs);
  const mtime = utimesSeconds(mtimeNs);
  if (atime !== undefined && mtime !== undefined) {
    await fs.lutimes(path, atime, mtime);
  } else if (atimeNs === mtimeNs) {
    await (await loadExeca())('touch', ['-h', '-d', `@${touchSeconds(mtimeNs)}`, '--', path]);
  } else {
    await (await loadExeca())('touch', ['-h', '-a', '-d', `@${touchSeconds(atimeNs)}`, '--', path]);
    await (await loadExeca())('touch', ['-h', '-m', '-d', `@${touchSeconds(mtimeNs)}`, '--', path]);
  }
}

/** One entry's times, for {@link setTimesOfMany}. */
export interface EntryTimes {
  readonly path: string;
  readonly atimeNs: bigint;
  readonly mtimeNs: bigint;
}

/**
 * {@link setTimes} for many entries at once, exactly to the nanosecond, at
 * the cost of two processes whatever their number: xargs runs `touch -a`
 * and then `touch -m` over all of them. Symlinks are not followed.
 */
export async function setTimesOfMany(entries: readonly EntryTimes[], signal?: AbortSignal): Promise<void> {
  if (entries.length === 0) return;
  for (const [flag, time] of [['-a', (e: EntryTimes) => e.atimeNs], ['-m', (e: EntryTimes) => e.mtimeNs]] as const) {
    // `-d@S.N` and the path, NUL-separated: any byte but NUL may be in a path.
    const input = entries.map((e) => `-d@${touchSeconds(time(e))}\0${e.path}\0`).join('');
    const result = await (await loadExeca())('xargs', ['-0', '-n', '2', 'touch', '-h', flag], {
      input,
      reject: false,
      ...(signal === undefined ? {} : { cancelSignal: signal }),
    });
    if (signal?.aborted === true) throw signal.reason;
    if (result.failed) throw new Error(`setting times failed: ${result.stderr.trim() || result.shortMessage}`);
  }
}

/**
 * Which extended attributes travel with a copy. `trusted.overlay.*` is
 * overlayfs's own bookkeeping (opaque dirs, redirects, origins): on a copy it
 * would make the destination look like an overlay whiteout or redirect.
 * `security.selinux` is a label from the host's policy, which the runtime
 * assigns where the file lands. Everything else, including
 * `security.capability` (file capabilities, e.g. of ping) and POSIX ACLs, is
 * part of the file.
 */
export function shouldCopyXattr(name: string): boolean {
  return !name.startsWith('trusted.overlay.') && name !== 'security.selinux';
}

/**
 * Copies extended attributes; a filesystem without xattr support on either
 * side is not an error. Synchronous, like the rest of an entry's metadata:
 * each call takes microseconds in the page cache, far less than a round trip
 * through libuv's thread pool.
 */
function copyXattrs(src: string, dest: string): void {
  let names: string[];
  try {
    names = xattrSync().listAttributesSync(src);
  } catch (err) {
    if (errnoOf(err) === 'ENOTSUP') return;
    throw err;
  }
  for (const name of names) {
    if (!shouldCopyXattr(name)) continue;
    try {
      xattrSync().setAttributeSync(dest, name, xattrSync().getAttributeSync(src, name));
    } catch (err) {
      if (errnoOf(err) !== 'ENOTSUP') throw err;
    }
  }
}

/** Decodes Linux's `dev_t` (glibc's encoding, as stat returns it) into major and minor numbers. */
export function deviceNumbers(rdev: bigint): [bigint, bigint] {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return [major, minor];
}

/** Creates a fifo or device node; Node has no mknod, and these are rare enough for a process each. */
async function makeNode(dest: string, stats: BigIntStats): Promise<void> {
  if (stats.isFIFO()) {
    await (await loadExeca())('mknod', ['--', dest, 'p']);
    return;
  }
  const [major, minor] = deviceNumbers(stats.rdev);
  await (await loadExeca())('mknod', ['--', dest, stats.isCharacterDevice() ? 'c' : 'b', String(major), String(minor)]);
}

/**
 * Makes `dest` a copy of the entry `src` described by `stats` (its lstat),
 * with owner, mode (incl. setuid/setgid/sticky), xattrs and times, unless
 * `options` overrides them.
 *
 * - A regular file is copied with copy-on-write (reflink) where the
 *   filesystem supports it. With `options.hardlinks`, further names of a
 *   multiply-linked file become hard links to the first copy.
 * - A directory is created empty, or kept when `dest` is already a directory
 *   (merge), and given the source's metadata (see {@link copyTimes} for its
 *   times).
 * - A symlink is recreated with the same target text; it keeps no mode or
 *   xattrs (Linux gives links neither that matters; fs-xattr would follow it).
 * - A fifo or device node is recreated with `mknod`.
 * - A socket is skipped, as tar does: it only means something to a live process.
 *
 * `dest` must not exist (except a directory onto a directory).
 */
export async function copyEntry(src: string, dest: string, stats: BigIntStats, options: CopyEntryOptions = {}): Promise<void> {
  if (stats.isSocket()) return;
  const isLink = stats.isSymbolicLink();
  if (stats.isDirectory()) {
    try {
      await fs.mkdir(dest, 0o700);
    } catch (err) {
      if (errnoOf(err) !== 'EEXIST' || !(await fs.lstat(dest)).isDirectory()) throw err;
    }
  } else if (stats.isFile()) {
    const key = `${stats.dev}:${stats.ino}`;
    const first = stats.nlink > 1n ? options.hardlinks?.get(key) : undefined;
    if (first !== undefined) {
      // The first copy already carries the metadata; a hard link shares it.
      await fs.link(first, dest);
      return;
    }
    const flags = fsConstants.COPYFILE_EXCL | fsConstants.COPYFILE_FICLONE;
    // A small file costs more in its round trip through the thread pool than
    // in its copy; a big one would hold the main thread for as long as its bytes take.
    if (stats.size <= SYNC_COPY_MAX_BYTES) copyFileSync(src, dest, flags);
    else await fs.copyFile(src, dest, flags);
    if (stats.nlink > 1n) options.hardlinks?.set(key, dest);
    // libuv's copyfile gives the new file the source's mode (fchmod on its descriptor).
    await applyMetadata(src, dest, stats, options, { modeCopied: true });
    return;
  } else if (isLink) {
    // Two syscalls of microseconds: not worth two thread-pool round trips.
    symlinkSync(readlinkSync(src), dest);
  } else {
    await makeNode(dest, stats);
  }

  await applyMetadata(src, dest, stats, options);
}

/**
 * Gives the entry `dest`, just created as a copy of `src` (described by
 * `stats`), its owner, mode, xattrs and times, or the overrides of
 * `options`. Synchronous calls on the main thread but for times finer than a
 * microsecond (see {@link setTimes}): each is one syscall of a few
 * microseconds, and a tree copy makes thousands of them, where a promise
 * each through the thread pool costs several times the syscall.
 */
export async function applyMetadata(
  src: string,
  dest: string,
  stats: BigIntStats,
  options: MetadataOverrides = {},
  made: { readonly modeCopied?: boolean } = {},
): Promise<void> {
  // Order matters: chown clears setuid/setgid and file capabilities, so mode
  // and xattrs come after it; times come last since the others change ctime only.
  const owner = options.owner ?? { uid: Number(stats.uid), gid: Number(stats.gid) };
  lchownSync(dest, owner.uid, owner.gid);
  if (!stats.isSymbolicLink()) {
    const mode = Number(stats.mode) & MODE_BITS;
    // A file whose creation already gave it the source's mode needs no chmod,
    // unless the chown above cleared its setuid/setgid bits or the mode is overridden.
    const keep = made.modeCopied === true && options.mode === undefined && (mode & 0o6000) === 0;
    if (!keep) chmodSync(dest, options.mode === undefined ? mode : options.mode(mode, stats.isDirectory()));
    copyXattrs(src, dest);
  }
  await copyTimes(dest, stats, options.timestamp);
}

/**
 * Gives `dest` the atime and mtime of the entry `stats` describes, kept to
 * the microsecond (finer would cost a process per entry, see
 * {@link setTimes}), or exactly `timestamp` when one is given. Adding
 * entries to a directory changes its mtime, so a tree copy calls this again
 * for each directory once it is filled.
 */
export async function copyTimes(dest: string, stats: BigIntStats, timestamp?: bigint): Promise<void> {
  const atimeNs = timestamp ?? floorToMicros(stats.atimeNs);
  const mtimeNs = timestamp ?? floorToMicros(stats.mtimeNs);
  const atime = utimesSeconds(atimeNs);
  const mtime = utimesSeconds(mtimeNs);
  // The common case, whole microseconds, in one synchronous call.
  if (atime !== undefined && mtime !== undefined) lutimesSync(dest, atime, mtime);
  else await setTimes(dest, atimeNs, mtimeNs);
}

/** execa is loaded on first use: importing it costs ~0.1 s that most builds never need. */
async function loadExeca(): Promise<typeof import('execa').execa> {
  return (await import('execa')).execa;
}
