/**
 * The name an op is shown under in progress: its `llb.customname`, else a
 * short summary of what it does. Renderers add their own decoration.
 */
import { assertNever } from '../errors.js';
import type { FileAction, Op } from './types.js';

const MAX_EXEC_NAME = 80;

function actionSummary(action: FileAction): string {
  switch (action.kind) {
    case 'mkdir':
      return `mkdir ${action.mkdir.path}`;
    case 'mkfile':
      return `mkfile ${action.mkfile.path}`;
    case 'rm':
      return `rm ${action.rm.path}`;
    case 'symlink':
      return `symlink ${action.symlink.oldpath} -> ${action.symlink.newpath}`;
    case 'copy':
      return `copy ${action.copy.src} -> ${action.copy.dest}`;
    default:
      return assertNever(action, 'file action');
  }
}

/**
 * `text` with the user information of every `SCHEME://USER:PASSWORD@HOST`
 * URL in it (and of `http(s)://USER@HOST`) replaced by `***`, so credentials written into a URL are never
 * shown (progress, errors, logs, records). Everything else is kept as written.
 */
export function maskUrlCredentials(text: string): string {
  // A user alone is a credential over HTTP (a token as the user name), not over ssh (`ssh://git@host`).
  return text.replaceAll(/([A-Za-z][A-Za-z0-9+.-]*:\/\/)([^/?#@\s]*)@/g, (whole, scheme: string, info: string) =>
    info.includes(':') || /^(git\+)?https?:\/\/$/i.test(scheme) ? `${scheme}***@` : whole,
  );
}

/** What progress calls `op`: `local://ctx`, `/bin/sh -c make`, `mkdir /app; copy /src -> /app`, `merge`, `diff`. */
export function opDisplayName(op: Pick<Op, 'body' | 'metadata'>): string {
  const custom = op.metadata.description['llb.customname'];
  if (custom !== undefined && custom !== '') return custom;
  const { body } = op;
  switch (body.kind) {
    case 'source':
      // An identifier may carry `user:password@` (git+https://, https://): progress and records never show it.
      return maskUrlCredentials(body.source.identifier);
    case 'exec': {
      const command = body.exec.meta.args.join(' ');
      return command.length > MAX_EXEC_NAME ? `${command.slice(0, MAX_EXEC_NAME - 3)}...` : command;
    }
    case 'file':
      return body.file.actions.map(actionSummary).join('; ');
    case 'merge':
      return 'merge';
    case 'diff':
      return 'diff';
    default:
      return assertNever(body, 'op kind');
  }
}
