/**
 * File actions over plain directories: the lead mounts the snapshots and
 * hands over paths; nothing here knows about refs or the cache. Every path
 * an action names is resolved inside its root (see fs/safe-path.ts).
 */
import { assertNever, ERROR_CODES, KilnError } from '../../errors.js';
import type { ErrorCode } from '../../errors.js';
import type { FileAction } from '../../llb/types.js';
import { resolveOwner } from './chown.js';
import { copy } from './copy.js';
import { mkdir } from './mkdir.js';
import { mkfile } from './mkfile.js';
import { rm } from './rm.js';
import { symlink } from './symlink.js';

/** The directories one file action works on. */
export interface FileActionContext {
  /** The mounted, writable directory the action changes (its `input`). */
  readonly target: string;
  /** For copy: the mounted directory to copy from (its `secondaryInput`); may be an empty dir for scratch. */
  readonly source?: string;
  readonly signal?: AbortSignal;
}

/** System errors that a user can act on, by errno. */
const ERRNO: Readonly<Record<string, [ErrorCode, string]>> = {
  ENOENT: [ERROR_CODES.PATH_NOT_FOUND, 'no such file or directory'],
  EEXIST: [ERROR_CODES.PATH_EXISTS, 'the path already exists'],
  ENOTDIR: [ERROR_CODES.NOT_A_DIRECTORY, 'a component of the path is not a directory'],
  EISDIR: [ERROR_CODES.PATH_EXISTS, 'the path is a directory'],
  ENOTEMPTY: [ERROR_CODES.PATH_EXISTS, 'the directory is not empty'],
  EACCES: [ERROR_CODES.FILE_ACTION, 'permission denied'],
  EPERM: [ERROR_CODES.FILE_ACTION, 'operation not permitted'],
  ENOSPC: [ERROR_CODES.FILE_ACTION, 'no space left on device'],
  EROFS: [ERROR_CODES.FILE_ACTION, 'the filesystem is read-only'],
};

/**
 * A KilnError for a failed action. System errors carry the host path of the
 * snapshot in their message, so the text is rebuilt from the errno and the
 * path as the user wrote it; the original stays as the cause.
 */
function actionError(err: unknown, subject: string): KilnError {
  if (err instanceof KilnError) return err;
  const errno = err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
  const [code, text] = (errno === undefined ? undefined : ERRNO[errno]) ?? [ERROR_CODES.FILE_ACTION, `failed${errno === undefined ? '' : ` (${errno})`}`];
  return new KilnError(code, `${subject}: ${text}`, { cause: err });
}

function subjectOf(action: FileAction): string {
  switch (action.kind) {
    case 'mkdir':
      return `"${action.mkdir.path}"`;
    case 'mkfile':
      return `"${action.mkfile.path}"`;
    case 'rm':
      return `"${action.rm.path}"`;
    case 'symlink':
      return `"${action.symlink.newpath}"`;
    case 'copy':
      return `"${action.copy.src}" to "${action.copy.dest}"`;
    default:
      return assertNever(action, 'file action');
  }
}

async function run(action: FileAction, ctx: FileActionContext): Promise<void> {
  switch (action.kind) {
    case 'mkdir':
      return mkdir(ctx.target, action.mkdir, await resolveOwner(ctx.target, action.mkdir.owner));
    case 'mkfile':
      return mkfile(ctx.target, action.mkfile, await resolveOwner(ctx.target, action.mkfile.owner));
    case 'rm':
      return rm(ctx.target, action.rm);
    case 'symlink':
      return symlink(ctx.target, action.symlink, await resolveOwner(ctx.target, action.symlink.owner));
    case 'copy': {
      if (ctx.source === undefined) throw new KilnError(ERROR_CODES.INTERNAL, 'a copy action was run without a source directory');
      const owner = await resolveOwner(ctx.target, action.copy.owner);
      return copy({ source: ctx.source, target: ctx.target, signal: ctx.signal }, action.copy, owner);
    }
    default:
      return assertNever(action, 'file action');
  }
}

/**
 * Applies one file action (mkdir, mkfile, rm, symlink, copy) to `ctx.target`.
 * Errors are KilnErrors with codes PATH_NOT_FOUND, PATH_EXISTS,
 * NOT_A_DIRECTORY or FILE_ACTION whose messages name paths as the action
 * wrote them, never where the snapshot is mounted; an abort rethrows the
 * signal's reason.
 */
export async function applyFileAction(action: FileAction, ctx: FileActionContext): Promise<void> {
  ctx.signal?.throwIfAborted();
  try {
    await run(action, ctx);
  } catch (err) {
    if (ctx.signal?.aborted === true && err === ctx.signal.reason) throw err;
    throw actionError(err, subjectOf(action));
  }
}
