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
  // One pass from each "://", not a regular expression: the pattern
  // `SCHEME://INFO@` tried at every position of a long run of letters
  // (a 140 KB identifier) took seconds, quadratic in its length.
  let sep = text.indexOf('://');
  if (sep < 0) return text;
  let out = '';
  /** Where the text not yet copied to `out` begins; no match starts before it. */
  let done = 0;
  for (; sep >= 0; sep = text.indexOf('://', sep + 3)) {
    let start = sep;
    while (start > done && isSchemeChar(text.charCodeAt(start - 1))) start--;
    // The scheme begins at its first letter (as the leftmost match of [A-Za-z][A-Za-z0-9+.-]* would).
    while (start < sep && !isLetter(text.charCodeAt(start))) start++;
    if (start === sep) continue;
    let end = sep + 3;
    while (end < text.length && !endsUserInfo(text.charCodeAt(end))) end++;
    if (text.charCodeAt(end) !== AT) continue;
    const scheme = text.slice(start, sep + 3);
    const info = text.slice(sep + 3, end);
    // A user alone is a credential over HTTP (a token as the user name), not over ssh (`ssh://git@host`).
    if (info.includes(':') || /^(git\+)?https?:\/\/$/i.test(scheme)) out += `${text.slice(done, sep + 3)}***@`;
    else out += text.slice(done, end + 1);
    done = end + 1;
    sep = end + 1 - 3;
  }
  return out + text.slice(done);
}

const AT = 0x40;

function isLetter(code: number): boolean {
  return (code >= 0x41 && code <= 0x5a) || (code >= 0x61 && code <= 0x7a);
}

/** `[A-Za-z0-9+.-]`. */
function isSchemeChar(code: number): boolean {
  return isLetter(code) || (code >= 0x30 && code <= 0x39) || code === 0x2b || code === 0x2e || code === 0x2d;
}

/** Where a URL's user info ends: `/ ? # @` or white space (as `\s` has it). */
function endsUserInfo(code: number): boolean {
  return code === 0x2f || code === 0x3f || code === 0x23 || code === AT || /\s/.test(String.fromCharCode(code));
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
