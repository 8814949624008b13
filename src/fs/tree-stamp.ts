/**
 * A stamp of a directory tree's metadata: sha256 over what GNU find prints
 * of every entry (path, type, permission bits, owner, device, inode, size,
 * mtime and ctime to the nanosecond, symlink target). Two equal stamps mean
 * no entry was added, removed, renamed, written, chmod'ed, chown'ed or
 * relinked in between (every such change moves a ctime, which no user call
 * sets back), so whatever was worked out from the tree's content then still
 * holds, as long as no entry was changed within a clock tick of the first
 * stamp (the caller checks that, see checksum.ts's racy window).
 *
 * One `find` child does the walk: its lstat calls run in C on the other CPU
 * while this process only feeds its output to sha256, where a walk in
 * JavaScript builds a stats object per entry (about 10 us of main-thread time
 * each). The stamp is local to this machine and this filesystem (inode
 * numbers, readdir order): it only ever says "unchanged", never what a
 * content checksum is.
 */
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import type { PathFilter } from './patterns.js';
import { spawnChild } from '../spawner.js';

/** What find prints per entry; `\0` ends each field (no path holds one). */
const FORMAT = '%y %m %U %G %D:%i:%s:%T@:%C@\\0%P\\0%l\\0';
/** Changes whenever what goes into a stamp changes. */
const STAMP_VERSION = 'kiln-tree-stamp-v1';
/** More top-level directories to skip than this and none are (the argument list stays short). */
const MAX_PRUNED = 512;

/** Options of {@link treeStamp}. */
export interface TreeStampOptions {
  /** The walk's filter: top-level directories it can take nothing from are not walked. */
  readonly filter?: PathFilter;
  readonly signal?: AbortSignal;
}

/** `name` as a literal find -path pattern. */
function literal(name: string): string {
  return name.replace(/[\\*?[\]]/g, '\\$&');
}

/** The top-level directories of `root` that `filter` can take nothing from. */
function prunedTopLevel(root: string, filter: PathFilter): string[] {
  const pruned: string[] = [];
  for (const d of readdirSync(root, { withFileTypes: true })) {
    if (d.isDirectory() && !filter.matches(d.name, true) && !filter.mayContain(d.name)) pruned.push(d.name);
  }
  return pruned.sort();
}

/**
 * The stamp of the tree under `root` (hex), or undefined when it cannot be
 * taken (no GNU find, an unreadable directory, a find that failed): the
 * caller then walks the tree itself, which reports what is wrong.
 */
export async function treeStamp(root: string, options: TreeStampOptions = {}): Promise<string | undefined> {
  const { filter, signal } = options;
  let pruned: string[];
  try {
    pruned = filter === undefined ? [] : prunedTopLevel(root, filter);
  } catch {
    return undefined;
  }
  if (pruned.length > MAX_PRUNED) pruned = [];
  const base = root.endsWith('/') ? root.slice(0, -1) : root;
  const prune = pruned.length === 0 ? [] : ['(', ...pruned.flatMap((name, i) => [...(i === 0 ? [] : ['-o']), '-path', `${literal(base)}/${literal(name)}`]), ')', '-prune', '-o'];
  const hash = createHash('sha256').update(`${STAMP_VERSION}\0${root}\0${pruned.join('\0')}\0\0`);
  return new Promise((resolve) => {
    // -H: a root that is a symlink to a directory is walked, as readdir does.
    // Through the resident spawner: node's fork of itself costs tens of milliseconds of main-thread time.
    const child = spawnChild({
      file: 'find',
      args: ['-H', root, '-mindepth', '1', ...prune, '-printf', FORMAT],
      stdin: 'ignore',
      stdout: 'pipe',
      stderr: 'ignore',
      env: { ...process.env, LC_ALL: 'C' },
      ...(signal === undefined ? {} : { signal }),
    });
    child.stdout?.on('data', (chunk: Buffer) => hash.update(chunk));
    child.on('error', () => resolve(undefined));
    child.on('close', (code) => resolve(code === 0 ? hash.digest('hex') : undefined));
  });
}
