/**
 * `kiln build -i`: a shell in the step that failed. The terminal is checked
 * before anything runs; when an exec op fails, the progress view steps
 * aside, a shell opens in the failed step on kiln's terminal, and the build
 * goes on failing once it exits.
 */
import type { WriteStream } from 'node:tty';
import { asKilnError, ERROR_CODES, KilnError } from '../errors.js';
import type { FailedExec } from '../ops/types.js';
import type { ProgressRenderer } from '../progress/index.js';

/** The flags of `-i`. */
export interface InteractiveFlags {
  readonly interactive?: boolean;
  /** `--shell CMD`: the shell's command line, split at spaces. */
  readonly shell?: string;
}

/** The terminal and command of the shell `-i` opens. */
export interface InteractiveShell {
  readonly terminal: { readonly input: typeof process.stdin; readonly output: WriteStream & { readonly fd: number } };
  readonly args: readonly string[];
}

/** The shell when no `--shell` is given. */
const DEFAULT_SHELL = '/bin/sh';

/**
 * What `-i` and `--shell` ask for, checked before the build starts:
 * undefined without `-i`; a USAGE error when stdin is not a terminal (the
 * shell would have nothing to read), the definition comes on stdin, or
 * neither stdout nor stderr is a terminal.
 */
export function interactiveShell(flags: InteractiveFlags, file: string): InteractiveShell | undefined {
  if (flags.interactive !== true) {
    if (flags.shell !== undefined) throw new KilnError(ERROR_CODES.USAGE, '--shell is the command of the -i shell: give -i (--interactive) too');
    return undefined;
  }
  if (file === '-') throw new KilnError(ERROR_CODES.USAGE, '-i (--interactive) takes stdin for the shell: give the definition as a file, not -');
  if (process.stdin.isTTY !== true) throw new KilnError(ERROR_CODES.USAGE, '-i (--interactive) needs a terminal on stdin for the shell, and stdin is not a terminal (run kiln from a terminal, or leave out -i)');
  const output = process.stdout.isTTY ? process.stdout : process.stderr.isTTY ? process.stderr : undefined;
  if (output === undefined) throw new KilnError(ERROR_CODES.USAGE, '-i (--interactive) needs a terminal on stdout or stderr for the shell');
  const args = (flags.shell ?? DEFAULT_SHELL).split(' ').filter((a) => a !== '');
  if (args.length === 0) throw new KilnError(ERROR_CODES.USAGE, '--shell: the command is empty');
  return { terminal: { input: process.stdin, output }, args };
}

/**
 * The solve's onExecError hook for `shell`: the first failed step gets the
 * shell; a step that fails while it is open waits for it to close (so its
 * failure does not cancel the shell's step), then fails without one.
 */
export function shellOnFailure(shell: InteractiveShell, progress: ProgressRenderer, signal: AbortSignal): (failure: FailedExec) => Promise<void> {
  let opened: Promise<void> | undefined;
  const open = async (failure: FailedExec): Promise<void> => {
    await progress.pause();
    const out = shell.terminal.output;
    out.write(`\nkiln: op "${failure.op}" failed: ${failure.error.message}\n`);
    const { tail } = failure.error;
    if (tail.length > 0) out.write(`  last lines of output:\n${tail.map((l) => `  > ${l}\n`).join('')}`);
    out.write(`kiln: opening ${shell.args.join(' ')} in the failed step; exit it to end the build\n`);
    try {
      const status = await failure.shell({ terminal: shell.terminal, args: shell.args, signal });
      out.write(`kiln: the shell exited${status.signal === undefined ? ` with code ${status.exitCode}` : ` on ${status.signal}`}\n`);
    } catch (err) {
      out.write(`kiln: cannot open a shell in op "${failure.op}": ${asKilnError(err).message}\n`);
    } finally {
      progress.resume();
    }
  };
  return (failure) => {
    if (opened !== undefined) return opened;
    opened = open(failure);
    return opened;
  };
}
