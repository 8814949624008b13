/**
 * Path resolution inside a root directory, as if the root were `/` (what
 * chroot would do). Every component is looked at with lstat and every symlink
 * read with readlink and re-resolved against the root, so neither `..` nor a
 * symlink (absolute, relative, chained) can lead outside it. The host's
 * realpath is never used: it would follow an absolute link to the host's own
 * `/etc`. Concurrent modification of the tree is out of scope (a snapshot is
 * private to the op that changes it).
 */
import type { Stats } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { ERROR_CODES, KilnError } from '../errors.js';

/** The most symlinks one resolution follows, like Linux's ELOOP limit. */
const MAX_SYMLINK_HOPS = 40;

/** Options of {@link resolveInRoot}. */
export interface ResolveOptions {
  /** Follow a symlink in the last component (default true); false resolves the link itself. */
  readonly followFinal?: boolean;
}

function components(p: string): string[] {
  return p.split('/').filter((c) => c !== '' && c !== '.');
}

function errnoOf(err: unknown): string | undefined {
  return err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

/**
 * What resolution needs of a tree: an entry looked at by its path
 * components (none of them a symlink but possibly the last).
 */
export interface TreeAccess {
  /** The entry's stats, without following a final symlink; undefined when it does not exist (or a parent is not a directory). */
  lstat(parts: readonly string[]): Promise<Stats | undefined>;
  readlink(parts: readonly string[]): Promise<string>;
}

/** A directory of the host as a tree. */
function directoryAccess(root: string): TreeAccess {
  return {
    async lstat(parts) {
      try {
        return await fs.lstat(path.join(root, ...parts));
      } catch (err) {
        if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ENOTDIR') return undefined;
        throw err;
      }
    },
    readlink: (parts) => fs.readlink(path.join(root, ...parts)),
  };
}

/**
 * Resolves `p` (absolute or relative to `/`) under `root`. followFinal=false leaves the last component unresolved (for rm/symlink/lchown of a link itself). Returns the host path; the target may not exist.
 *
 * Components below the first missing one are taken literally (`..` still
 * cannot climb above the root), so the result is where the path would be
 * created.
 *
 * @throws KilnError FILE_ACTION when more than 40 symlinks are followed (a loop).
 */
export async function resolveInRoot(root: string, p: string, options: ResolveOptions = {}): Promise<string> {
  return path.join(root, ...(await resolveInTree(directoryAccess(root), p, options)));
}

/**
 * {@link resolveInRoot} over any tree: the components `p` resolves to,
 * symlinks followed inside the tree.
 */
export async function resolveInTree(tree: TreeAccess, p: string, options: ResolveOptions = {}): Promise<string[]> {
  const followFinal = options.followFinal ?? true;
  // `resolved` only ever holds names of real directories (or of the first
  // missing component and what follows it); `todo` is what is left to walk.
  const resolved: string[] = [];
  const todo = components(p);
  let hops = 0;
  // Index in `resolved` of the first component found missing, -1 while all exist.
  let missingAt = -1;

  while (todo.length > 0) {
    const name = todo.shift() as string;
    if (name === '..') {
      resolved.pop();
      // Climbing back out of a missing part means what follows must be checked again.
      if (resolved.length <= missingAt) missingAt = -1;
      continue;
    }
    if (missingAt >= 0 || (todo.length === 0 && !followFinal)) {
      resolved.push(name);
      continue;
    }
    const stats = await tree.lstat([...resolved, name]);
    // A missing component (or one under a non-directory) ends the walk; the
    // caller's own operation then reports ENOENT/ENOTDIR for the path.
    if (stats === undefined) {
      missingAt = resolved.length;
      resolved.push(name);
      continue;
    }
    if (!stats.isSymbolicLink()) {
      resolved.push(name);
      continue;
    }
    hops += 1;
    if (hops > MAX_SYMLINK_HOPS) {
      throw new KilnError(ERROR_CODES.FILE_ACTION, `cannot resolve "${p}": too many levels of symbolic links (more than ${MAX_SYMLINK_HOPS}; a symlink loop?)`);
    }
    const target = await tree.readlink([...resolved, name]);
    // An absolute target starts again from the root; a relative one from the link's directory.
    if (target.startsWith('/')) resolved.length = 0;
    todo.unshift(...components(target));
  }
  return resolved;
}

/**
 * The inverse of {@link resolveInRoot} for messages: the host path `hostPath`
 * under `root` as the path a user sees inside it (`/etc/passwd`), so errors
 * never show where a snapshot happens to be mounted.
 */
export function toRootPath(root: string, hostPath: string): string {
  return `/${path.relative(root, hostPath).split(path.sep).join('/')}`;
}
