/**
 * Running a system command and reporting how it ended, with plain
 * node:child_process: the commands kiln runs on hot paths (mount, umount,
 * CNI plugins, unshare) cannot afford execa's load time (~90 ms on the
 * reference machine) or its per-call overhead.
 */
import { spawn } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { access } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { type Child, spawnChild } from './spawner.js';

/** A command line and where to run it. */
export interface Command {
  readonly file: string;
  readonly args: readonly string[];
  readonly cwd?: string;
  /** The whole environment; default this process's. */
  readonly env?: NodeJS.ProcessEnv;
  /** Written to stdin, which is then closed. */
  readonly input?: string;
  /** Kills the command (SIGTERM) when aborted; it then ends with code null. */
  readonly signal?: AbortSignal;
  /**
   * Forked by node itself, not the spawner: its stdout is a real pipe that
   * `start` can hand to another command as that one's stdin.
   */
  readonly nodeSpawn?: boolean;
}

/** How a command ended. */
export interface Outcome {
  /** Exit code; null when it could not be started or was killed. */
  readonly code: number | null;
  readonly stderr: string;
  /** What it wrote to stdout, when asked for (`exec(cmd, { stdout: true })`). */
  readonly stdout: string;
}

const MAX_STDERR = 16 * 1024;

/** Runs `cmd` and reports how it ended, keeping its stdout when `stdout`; never rejects. */
export function exec(cmd: Command, options: { readonly stdout?: boolean } = {}): Promise<Outcome> {
  const started = start(cmd, options.stdout === true ? 'pipe' : 'ignore');
  if (options.stdout !== true) return started.done;
  const chunks: Buffer[] = [];
  started.stdout?.on('data', (chunk: Buffer) => chunks.push(chunk));
  return started.done.then((outcome) => ({ ...outcome, stdout: Buffer.concat(chunks).toString('utf8') }));
}

/** Starts `cmd` with its stdout ignored or piped (and its stdin from `stdin` or `cmd.input`). */
export function start(cmd: Command, stdout: 'ignore' | 'pipe', stdin?: Readable): { stdout: Readable | undefined; done: Promise<Outcome> } {
  const options = {
    ...(cmd.cwd === undefined ? {} : { cwd: cmd.cwd }),
    ...(cmd.env === undefined ? {} : { env: cmd.env }),
    ...(cmd.signal === undefined ? {} : { signal: cmd.signal }),
  };
  // A stream for stdin is another child's stdout, passed as its descriptor:
  // only node's spawn takes that. Otherwise the resident spawner
  // (spawner.ts), since node's own fork costs tens of milliseconds of
  // main-thread time.
  const child: Child =
    stdin !== undefined || cmd.nodeSpawn === true
      ? spawn(cmd.file, cmd.args, { ...options, stdio: [stdin ?? (cmd.input === undefined ? 'ignore' : 'pipe'), stdout, 'pipe'] })
      : spawnChild({ file: cmd.file, args: cmd.args, ...options, stdin: cmd.input === undefined ? 'ignore' : 'pipe', stdout, stderr: 'pipe' });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    if (stderr.length < MAX_STDERR) stderr += chunk;
  });
  // A command that exits before reading all its input must not crash us (EPIPE).
  child.stdin?.on('error', () => {});
  if (cmd.input !== undefined) child.stdin?.end(cmd.input);
  const done = new Promise<Outcome>((resolve) => {
    child.once('error', (err) => resolve({ code: null, stderr: `cannot run ${cmd.file}: ${err.message}`, stdout: '' }));
    child.once('close', (code) => resolve({ code, stderr, stdout: '' }));
  });
  return { stdout: child.stdout ?? undefined, done };
}

/** The first executable `name` in PATH, or undefined. */
export async function findInPath(name: string, searchPath: string = process.env['PATH'] ?? ''): Promise<string | undefined> {
  for (const dir of searchPath.split(path.delimiter)) {
    if (dir === '') continue;
    const candidate = path.join(dir, name);
    if (await access(candidate, fsConstants.X_OK).then(() => true, () => false)) return candidate;
  }
  return undefined;
}
