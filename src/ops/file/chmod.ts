/**
 * The `mode` of a copy: fixed bits, or a chmod(1) symbolic expression applied
 * to each copied entry's own mode (BuildKit's `modeStr`, Dockerfile
 * `COPY --chmod=u+x`).
 *
 * Grammar, as chmod(1) documents it: clauses separated by `,`; each clause is
 * `[ugoa]*` followed by one or more `[+-=]` operations, each with letters from
 * `rwxXst` or one of `u`, `g`, `o` (copy that class's current bits). An
 * empty "who" means `a`; unlike chmod(1) no umask is applied, so a build
 * gives the same modes on every machine.
 */
import type { CopyMode } from '../../llb/types.js';
import { ERROR_CODES, KilnError } from '../../errors.js';

/** Maps an entry's current mode bits (07777) to its new ones. */
export type ModeFunction = (mode: number, isDir: boolean) => number;

/** The bits each "who" letter may touch: its rwx plus its special bit. */
const WHO_BITS: Readonly<Record<string, number>> = { u: 0o4700, g: 0o2070, o: 0o1007, a: 0o7777 };
/** Where each class's rwx bits live, to copy them (`g=u`). */
const CLASS_SHIFT: Readonly<Record<string, number>> = { u: 6, g: 3, o: 0 };
const PERM_BITS: Readonly<Record<string, number>> = { r: 0o444, w: 0o222, x: 0o111, s: 0o6000, t: 0o1000 };

const CLAUSE = /^([ugoa]*)((?:[-+=](?:[ugo]|[rwxXst]*))+)$/;
// `[ugo]` first: the empty alternative would otherwise match before it.
const OPERATION = /([-+=])([ugo]|[rwxXst]*)/g;

interface Operation {
  readonly op: string;
  readonly perms: string;
}

interface Clause {
  readonly who: number;
  readonly ops: readonly Operation[];
}

function parse(expr: string): Clause[] {
  return expr.split(',').map((text) => {
    const m = CLAUSE.exec(text);
    if (m === null) {
      throw new KilnError(
        ERROR_CODES.FILE_ACTION,
        `invalid chmod expression "${expr}": "${text}" is not [ugoa]*[+-=][rwxXst]* (for example "u+x,go-w")`,
      );
    }
    const whoLetters = m[1] ?? '';
    const who = whoLetters === '' ? WHO_BITS.a! : [...whoLetters].reduce((bits, c) => bits | WHO_BITS[c]!, 0);
    const ops = [...(m[2] ?? '').matchAll(OPERATION)].map((o) => ({ op: o[1] ?? '', perms: o[2] ?? '' }));
    return { who, ops };
  });
}

function apply(clauses: readonly Clause[], start: number, isDir: boolean): number {
  let mode = start;
  for (const { who, ops } of clauses) {
    for (const { op, perms } of ops) {
      let bits = 0;
      const shift = CLASS_SHIFT[perms];
      if (shift !== undefined) {
        // Copy one class's rwx onto every class named by `who`.
        bits = (((mode >> shift) & 0o7) * 0o111) & who & 0o777;
      } else {
        for (const c of perms) {
          // X: execute only for directories and for files someone may already execute.
          if (c === 'X') bits |= isDir || (mode & 0o111) !== 0 ? 0o111 : 0;
          else bits |= PERM_BITS[c]!;
        }
        bits &= who;
      }
      if (op === '+') mode |= bits;
      else if (op === '-') mode &= ~bits;
      // '=' clears what `who` covers first; like chmod(1) it leaves a
      // directory's setuid/setgid alone unless they are named.
      else mode = (mode & ~(who & (isDir ? ~0o6000 : ~0))) | bits;
    }
  }
  return mode & 0o7777;
}

/**
 * Compiles a copy's mode into a function of each entry's mode.
 *
 * @throws KilnError FILE_ACTION for a malformed chmod expression.
 */
export function compileCopyMode(mode: CopyMode): ModeFunction {
  if (mode.kind === 'bits') return () => mode.bits & 0o7777;
  const clauses = parse(mode.expr);
  return (current, isDir) => apply(clauses, current, isDir);
}
