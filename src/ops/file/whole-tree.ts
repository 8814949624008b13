/**
 * A whole directory copied by GNU `cp -a`, for the plain case of the copy
 * action: no include/exclude patterns, no owner, mode or timestamp override,
 * and nothing at the destination yet. There a copy is thousands of small
 * files, and the cost is the JavaScript around each file's syscalls (a
 * create, a data copy, owner, xattrs, times): in Node it came to 1.6-3.4x
 * `cp -a` of the same tree; cp's C loop makes the same syscalls with almost
 * nothing around them. It keeps what the entry-by-entry copy keeps (owner,
 * mode with setuid/setgid, xattrs including `security.capability`, hard
 * links within the tree, symlinks as links, fifos and device nodes, every
 * directory's times set once it is filled), and times to the nanosecond
 * where Node's utimes stops at the microsecond.
 *
 * What cp does differently is undone or ruled out: cp recreates a socket,
 * which kiln skips as tar does, so the copies of sockets are removed
 * afterwards; and on a host with SELinux (cp -a would carry
 * `security.selinux` labels over, which kiln leaves to the runtime) the
 * caller copies entry by entry. `trusted.overlay.*` needs no check: an
 * overlay mount hides its own xattrs, and a layer presented on its own (a
 * bind) never had an overlay over it. Also not checked: the few names in
 * /etc/xattr.conf that cp skips (xfs's `trusted.SGI_*`, `security.evm`,
 * `afs.*`), which the entry-by-entry copy would carry.
 *
 * Safety as before: cp never follows a symlink in the source (-P), and the
 * destination is a path that does not exist yet or an empty directory,
 * resolved in the target root by the caller, so nothing in the target can
 * be written through.
 */
import type { BigIntStats, Dirent } from 'node:fs';
import { chmodSync, existsSync, lchownSync, lstatSync, readdirSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import { listAttributesSync } from 'fs-xattr';
import { exec } from '../../command.js';
import { ERROR_CODES, KilnError } from '../../errors.js';
import { setTimes, shouldCopyXattr } from '../../fs/metadata.js';
import { fullFilesystem, isNoSpace } from '../../fs/no-space.js';

/** Options of {@link copyWholeTree}. */
export interface WholeTreeCopy {
  /** The source directory (host path) and its lstat. */
  readonly src: string;
  readonly stats: BigIntStats;
  /** Where the copy lands (host path): absent, or an empty directory whose owner and mode are kept. */
  readonly dest: string;
  /** lstat of `dest`, undefined when it does not exist. */
  readonly destStats: BigIntStats | undefined;
  /** The source path as the action names it, for messages. */
  readonly shownAs: string;
  /** Host-path prefixes to drop from cp's messages (the roots), so they name paths as the build sees them. */
  readonly roots: readonly string[];
  readonly signal?: AbortSignal | undefined;
}

/** Directories read between two turns of the event loop while looking for sockets. */
const DIRS_PER_TURN = 64;

let selinux: boolean | undefined;

/** Whether this host runs SELinux (then cp -a would copy each file's label). */
function selinuxHost(): boolean {
  selinux ??= existsSync('/sys/fs/selinux/enforce');
  return selinux;
}

/** A directory entry's type from readdir, or from lstat when the filesystem does not report it. */
function isSocket(d: Dirent, dir: string): boolean {
  if (d.isSocket()) return true;
  if (d.isFile() || d.isDirectory() || d.isSymbolicLink() || d.isFIFO() || d.isCharacterDevice() || d.isBlockDevice()) return false;
  return lstatSync(`${dir}/${d.name}`).isSocket();
}

function isDirectory(d: Dirent, dir: string): boolean {
  return d.isDirectory() || (d.isSymbolicLink() || d.isFile() ? false : lstatSync(`${dir}/${d.name}`).isDirectory());
}

/**
 * The sockets under `root`, relative paths. Reads directories only (their
 * entry types come with the names); lstat's only an entry whose type the
 * filesystem does not report.
 */
async function socketsIn(root: string, signal: AbortSignal | undefined): Promise<string[]> {
  const sockets: string[] = [];
  const dirs = [''];
  let read = 0;
  for (let rel = dirs.pop(); rel !== undefined; rel = dirs.pop()) {
    const dir = rel === '' ? root : `${root}/${rel}`;
    const prefix = rel === '' ? '' : `${rel}/`;
    for (const d of readdirSync(dir, { withFileTypes: true })) {
      if (isSocket(d, dir)) sockets.push(prefix + d.name);
      else if (isDirectory(d, dir)) dirs.push(prefix + d.name);
    }
    if (++read % DIRS_PER_TURN === 0) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      signal?.throwIfAborted();
    }
  }
  return sockets;
}

/**
 * Removes the copies cp made of the sockets `rels` (kiln copies no socket)
 * and gives their directories back the source's times.
 */
async function dropSockets(src: string, dest: string, rels: readonly string[]): Promise<void> {
  for (const rel of rels) unlinkSync(`${dest}/${rel}`);
  for (const dir of new Set(rels.map((rel) => path.posix.dirname(rel)))) {
    const from = lstatSync(dir === '.' ? src : `${src}/${dir}`, { bigint: true });
    await setTimes(dir === '.' ? dest : `${dest}/${dir}`, from.atimeNs, from.mtimeNs);
  }
}

function isEmptyDirectory(p: string, stats: BigIntStats): boolean {
  return stats.isDirectory() && readdirSync(p).length === 0;
}

function hasCopiedXattrs(p: string): boolean {
  try {
    return listAttributesSync(p).some(shouldCopyXattr);
  } catch {
    return true;
  }
}

/** cp's complaint with the roots' host paths taken out (it names paths as the build sees them), and the full filesystem named on ENOSPC. */
function cpError(copy: WholeTreeCopy, raw: string): KilnError {
  let shown = raw;
  for (const root of copy.roots) shown = shown.replaceAll(root.endsWith('/') ? root : `${root}/`, '/');
  const full = isNoSpace(raw) ? fullFilesystem([copy.dest]) : undefined;
  return new KilnError(ERROR_CODES.FILE_ACTION, `cannot copy "${copy.shownAs}": ${shown}${full === undefined ? '' : ` (${full})`}`, { cause: new Error(raw) });
}

/**
 * Copies the directory `src` to `dest` with `cp -a` when the copy is plain
 * enough (see the module comment) and returns true; returns false, having
 * written nothing, when the caller has to copy entry by entry. An existing
 * empty `dest` keeps its owner and mode and takes the source's times (and
 * `src` must then have no xattrs of its own, which would land on `dest`).
 */
export async function copyWholeTree(copy: WholeTreeCopy): Promise<boolean> {
  const { src, dest, destStats, signal } = copy;
  if (!copy.stats.isDirectory() || selinuxHost()) return false;
  if (destStats !== undefined && !(isEmptyDirectory(dest, destStats) && !hasCopiedXattrs(src))) return false;
  signal?.throwIfAborted();
  // -T: `dest` is the copy itself, never a directory to copy into.
  const copying = exec({ file: 'cp', args: ['-a', '--reflink=auto', '--no-target-directory', '--', src, dest], ...(signal === undefined ? {} : { signal }) });
  // Sockets are looked for while cp runs (they are rare, and looking costs a
  // walk): cp copies them, and their copies are removed afterwards.
  const sockets = await socketsIn(src, signal).then(
    (found) => ({ found }),
    (error: unknown) => ({ error }),
  );
  const outcome = await copying;
  if (signal?.aborted === true) throw signal.reason;
  if (outcome.code !== 0) throw cpError(copy, outcome.stderr.trim() || `cp exited with ${String(outcome.code)}`);
  if ('error' in sockets) throw sockets.error;
  if (destStats !== undefined) {
    // cp gave the existing directory the source's owner and mode: it was the
    // destination, not part of the copy, so it gets its own back (owner
    // first: a chown clears setgid). Its times stay the source's.
    lchownSync(dest, Number(destStats.uid), Number(destStats.gid));
    chmodSync(dest, Number(destStats.mode) & 0o7777);
  }
  if (sockets.found.length > 0) await dropSockets(src, dest, sockets.found);
  return true;
}
