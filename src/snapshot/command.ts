/**
 * Running the system commands snapshots need (mount, umount, cp, tar,
 * mknod). Plain node:child_process: a snapshot mount sits on the path of a
 * fully cached build, where execa's load time (~90 ms on the reference
 * machine) and per-call overhead would be most of the budget.
 */
import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { ERROR_CODES, KilnError } from '../errors.js';
import { explainNoSpace } from '../fs/no-space.js';

/** A command line and where to run it. */
export interface Command {
  readonly file: string;
  readonly args: readonly string[];
  readonly cwd?: string;
  /** Written to stdin, which is then closed. */
  readonly input?: string;
}

/** How a command ended. */
export interface Outcome {
  /** Exit code; null when it could not be started or was killed. */
  readonly code: number | null;
  readonly stderr: string;
}

/** Runs `cmd` and reports how it ended; never rejects. */
export function exec(cmd: Command): Promise<Outcome> {
  return start(cmd, 'ignore').done;
}

/**
 * Runs `cmd` and fails with a SNAPSHOT error that says what could not be
 * done (`action`) and what the command complained.
 */
export async function run(action: string, cmd: Command): Promise<void> {
  check(action, await exec(cmd));
}

/** Runs `from | to`; fails like `run` if either fails. */
export async function runPiped(action: string, from: Command, to: Command): Promise<void> {
  const source = start(from, 'pipe');
  const sink = start(to, 'ignore', source.stdout);
  // The sink has its own copy of the pipe; ours would keep the source from
  // ever reporting 'close'.
  source.stdout?.destroy();
  const [a, b] = await Promise.all([source.done, sink.done]);
  check(action, a);
  check(action, b);
}

const MAX_STDERR = 16 * 1024;

function start(
  cmd: Command,
  stdout: 'ignore' | 'pipe',
  stdin?: Readable,
): { stdout: Readable | undefined; done: Promise<Outcome> } {
  const child = spawn(cmd.file, cmd.args, {
    ...(cmd.cwd === undefined ? {} : { cwd: cmd.cwd }),
    stdio: [stdin ?? (cmd.input === undefined ? 'ignore' : 'pipe'), stdout, 'pipe'],
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    if (stderr.length < MAX_STDERR) stderr += chunk;
  });
  // A command that exits before reading all its input must not crash us (EPIPE).
  child.stdin?.on('error', () => {});
  if (cmd.input !== undefined) child.stdin?.end(cmd.input);
  const done = new Promise<Outcome>((resolve) => {
    child.once('error', (err) => resolve({ code: null, stderr: `cannot run ${cmd.file}: ${err.message}` }));
    child.once('close', (code) => resolve({ code, stderr }));
  });
  return { stdout: child.stdout ?? undefined, done };
}

function check(action: string, outcome: Outcome): void {
  if (outcome.code === 0) return;
  const detail = outcome.stderr.trim() || `exit code ${String(outcome.code)}`;
  throw new KilnError(ERROR_CODES.SNAPSHOT, explainNoSpace(`${action}: ${detail}`));
}
