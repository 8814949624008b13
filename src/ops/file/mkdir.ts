/**
 * The `mkdir` action, and `mkdir -p` inside a root for it and for `copy`.
 *
 * Semantics (BuildKit's, with one deliberate difference): an existing
 * directory is fine with or without makeParents and keeps its metadata;
 * without makeParents the parent must exist. Every directory it creates,
 * missing parents included, gets the permission bits of `mode` (BuildKit
 * drops setuid, setgid and sticky here) and the action's owner and
 * timestamp. The mode is applied exactly, with no umask, so builds do not
 * depend on the daemon's. Where BuildKit silently accepts an existing
 * non-directory, this fails.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { setTimes } from '../../fs/metadata.js';
import type { OwnerIds } from '../../fs/metadata.js';
import { resolveInRoot, toRootPath } from '../../fs/safe-path.js';
import type { MkdirAction } from '../../llb/types.js';
import { ERROR_CODES, KilnError } from '../../errors.js';

/** Options of {@link makeDirs}. */
export interface MakeDirsOptions {
  /** Mode of the last directory, if created. */
  readonly mode: number;
  /** Mode of the missing directories above it. */
  readonly parentMode: number;
  readonly owner?: OwnerIds | undefined;
}

function errnoOf(err: unknown): string | undefined {
  return err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

/**
 * Creates `hostPath` and its missing parents below `root`. `hostPath` must
 * come from {@link resolveInRoot}: then every existing component is a real
 * directory and everything created is a new directory inside the root.
 * Returns the directories created, outermost first, for the caller to set
 * their times once it has finished adding to them.
 *
 * @throws KilnError NOT_A_DIRECTORY when a component exists and is not a directory.
 */
export async function makeDirs(root: string, hostPath: string, options: MakeDirsOptions): Promise<string[]> {
  const rel = path.relative(root, hostPath);
  if (rel === '..' || rel.startsWith('../') || path.isAbsolute(rel)) {
    throw new KilnError(ERROR_CODES.INTERNAL, `makeDirs: a path outside the root was given (${toRootPath(root, hostPath)})`);
  }
  const parts = rel === '' ? [] : rel.split(path.sep);
  const created: string[] = [];
  for (const [i, name] of parts.entries()) {
    const dir = path.join(root, ...parts.slice(0, i), name);
    try {
      await fs.mkdir(dir, 0o700);
    } catch (err) {
      if (errnoOf(err) !== 'EEXIST') throw err;
      if ((await fs.lstat(dir)).isDirectory()) continue;
      throw new KilnError(ERROR_CODES.NOT_A_DIRECTORY, `"${toRootPath(root, dir)}" exists and is not a directory`);
    }
    created.push(dir);
    if (options.owner !== undefined) await fs.lchown(dir, options.owner.uid, options.owner.gid);
    await fs.chmod(dir, i === parts.length - 1 ? options.mode : options.parentMode);
  }
  return created;
}

/** Runs a `mkdir` action in `target`. */
export async function mkdir(target: string, action: MkdirAction, owner: OwnerIds | undefined): Promise<void> {
  const hostPath = await resolveInRoot(target, action.path);
  const mode = action.mode & 0o777;
  let created: string[];
  if (action.makeParents) {
    created = await makeDirs(target, hostPath, { mode, parentMode: mode, owner });
  } else {
    try {
      await fs.mkdir(hostPath, 0o700);
    } catch (err) {
      switch (errnoOf(err)) {
        case 'EEXIST':
          if ((await fs.lstat(hostPath)).isDirectory()) return;
          throw new KilnError(ERROR_CODES.PATH_EXISTS, `"${action.path}" already exists and is not a directory`);
        case 'ENOENT':
          throw new KilnError(ERROR_CODES.PATH_NOT_FOUND, `cannot create "${action.path}": its parent directory does not exist (set makeParents to create it)`);
        default:
          throw err;
      }
    }
    if (owner !== undefined) await fs.lchown(hostPath, owner.uid, owner.gid);
    await fs.chmod(hostPath, mode);
    created = [hostPath];
  }
  if (action.timestamp !== undefined) {
    for (const dir of created) await setTimes(dir, action.timestamp, action.timestamp);
  }
}
