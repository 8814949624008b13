/**
 * The `mkfile` action: write a file with the given contents, mode, owner and
 * time. A symlink at the path is followed inside the root (as BuildKit
 * does); an existing regular file is overwritten in place, keeping its
 * hard links and its mode (as BuildKit's write does); a fifo, socket or
 * device node in the way is replaced, never opened (writing through a
 * device node would reach the host's device). Like BuildKit, only the
 * permission bits of `mode` are applied: setuid, setgid and sticky are not.
 */
import { constants as fsConstants } from 'node:fs';
import fs from 'node:fs/promises';
import type { OwnerIds } from '../../fs/metadata.js';
import { setTimes } from '../../fs/metadata.js';
import { resolveInRoot } from '../../fs/safe-path.js';
import type { MkfileAction } from '../../llb/types.js';
import { ERROR_CODES, KilnError } from '../../errors.js';

// O_NOFOLLOW: the resolved path's last component is not a link, and must not
// become one; O_NONBLOCK: never hang on a fifo.
const OPEN_FLAGS = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_TRUNC | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK;

/** Runs a `mkfile` action in `target`. */
export async function mkfile(target: string, action: MkfileAction, owner: OwnerIds | undefined): Promise<void> {
  const hostPath = await resolveInRoot(target, action.path);
  const existing = await fs.lstat(hostPath).catch(() => undefined);
  if (existing?.isDirectory()) throw new KilnError(ERROR_CODES.PATH_EXISTS, `cannot write file "${action.path}": it is a directory`);
  if (existing !== undefined && !existing.isFile()) await fs.rm(hostPath);

  let file: fs.FileHandle;
  try {
    file = await fs.open(hostPath, OPEN_FLAGS, 0o600);
  } catch (err) {
    if (err instanceof Error && 'code' in err && err.code === 'ENOENT') {
      throw new KilnError(ERROR_CODES.PATH_NOT_FOUND, `cannot write file "${action.path}": its parent directory does not exist`, { cause: err });
    }
    throw err;
  }
  try {
    await file.writeFile(action.data);
    if (owner !== undefined) await file.chown(owner.uid, owner.gid);
    if (existing?.isFile() !== true) await file.chmod(action.mode & 0o777);
  } finally {
    await file.close();
  }
  if (action.timestamp !== undefined) await setTimes(hostPath, action.timestamp, action.timestamp);
}
