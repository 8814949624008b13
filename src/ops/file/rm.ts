/**
 * The `rm` action: remove a path recursively. The last component is never
 * followed, so removing a symlink removes the link (and a link to `/` inside
 * the tree removes nothing else); the recursive removal does not follow
 * links either.
 */
import fs from 'node:fs/promises';
import { resolveInRoot } from '../../fs/safe-path.js';
import type { RmAction } from '../../llb/types.js';
import { ERROR_CODES, KilnError } from '../../errors.js';
import { hasWildcard, resolveWildcards } from './wildcard.js';

async function removeOne(target: string, p: string, allowNotFound: boolean): Promise<void> {
  const hostPath = await resolveInRoot(target, p, { followFinal: false });
  if (hostPath === target) throw new KilnError(ERROR_CODES.FILE_ACTION, `cannot remove "${p}": it is the root directory`);
  try {
    await fs.lstat(hostPath);
  } catch (err) {
    if (allowNotFound) return;
    throw new KilnError(ERROR_CODES.PATH_NOT_FOUND, `cannot remove "${p}": no such file or directory (set allowNotFound to ignore)`, { cause: err });
  }
  await fs.rm(hostPath, { recursive: true, force: true });
}

/**
 * Runs an `rm` action in `target`. With allowWildcard, a wildcard path
 * removes every match; no match is an error unless allowNotFound (BuildKit
 * ignores it silently, which hides typos).
 */
export async function rm(target: string, action: RmAction): Promise<void> {
  if (!action.allowWildcard || !hasWildcard(action.path)) {
    await removeOne(target, action.path, action.allowNotFound);
    return;
  }
  const matches = await resolveWildcards(target, action.path);
  if (matches.length === 0 && !action.allowNotFound) {
    throw new KilnError(ERROR_CODES.PATH_NOT_FOUND, `cannot remove "${action.path}": nothing matches (set allowNotFound to ignore)`);
  }
  for (const p of matches) await removeOne(target, p, action.allowNotFound);
}
