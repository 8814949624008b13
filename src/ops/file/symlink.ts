/**
 * The `symlink` action: create a link whose target text is stored exactly as
 * given (it is resolved later, by whoever follows it, inside their root).
 */
import fs from 'node:fs/promises';
import type { OwnerIds } from '../../fs/metadata.js';
import { setTimes } from '../../fs/metadata.js';
import { resolveInRoot } from '../../fs/safe-path.js';
import type { SymlinkAction } from '../../llb/types.js';
import { ERROR_CODES, KilnError } from '../../errors.js';

/** Runs a `symlink` action in `target`. */
export async function symlink(target: string, action: SymlinkAction, owner: OwnerIds | undefined): Promise<void> {
  const hostPath = await resolveInRoot(target, action.newpath, { followFinal: false });
  try {
    await fs.symlink(action.oldpath, hostPath);
  } catch (err) {
    const code = err instanceof Error && 'code' in err ? err.code : undefined;
    if (code === 'EEXIST') throw new KilnError(ERROR_CODES.PATH_EXISTS, `cannot create symlink "${action.newpath}": the path already exists`, { cause: err });
    if (code === 'ENOENT') {
      throw new KilnError(ERROR_CODES.PATH_NOT_FOUND, `cannot create symlink "${action.newpath}": its parent directory does not exist`, { cause: err });
    }
    throw err;
  }
  if (owner !== undefined) await fs.lchown(hostPath, owner.uid, owner.gid);
  if (action.timestamp !== undefined) await setTimes(hostPath, action.timestamp, action.timestamp);
}
