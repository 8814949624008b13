/**
 * A process's streams as containerd passes them to a shim: named pipes
 * (FIFOs) in a directory of ours, which the shim opens by path and copies
 * the process's stdio through. We read stdout and stderr and write stdin.
 */
import { execFile } from 'node:child_process';
import { closeSync, constants as fsConstants, openSync } from 'node:fs';
import { Socket } from 'node:net';
import path from 'node:path';
import { finished } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { ERROR_CODES, KilnError } from '../../errors.js';
import type { ProcessSpec } from '../types.js';
import type { ProcessIo } from './client.js';

const execFileAsync = promisify(execFile);
const { O_NONBLOCK, O_RDONLY, O_RDWR, O_WRONLY } = fsConstants;

/**
 * How long the output may trail the process's deletion. The shim closes its
 * ends when the process is deleted; the limit only guards against a shim
 * that never does.
 */
const DRAIN_LIMIT_MS = 5000;

/** The FIFOs of one process and the streams over them. */
export interface FifoIo {
  /** The paths to give containerd. */
  readonly io: ProcessIo;
  /** Once the shim has opened its ends (after Start): lets EOF through and starts feeding stdin. */
  attach(): void;
  /** Resolves when the shim has closed stdout and stderr and all they carried was passed on. */
  drained(): Promise<void>;
  /** Closes our ends; idempotent. */
  close(): void;
}

const STREAMS = ['stdin', 'stdout', 'stderr'] as const;

/**
 * Makes the FIFOs of one process in each of `dirs` (which must exist). It
 * takes a process (node cannot make a FIFO), so callers make many at once,
 * ahead of need.
 */
export async function makeFifos(dirs: readonly string[]): Promise<void> {
  try {
    await execFileAsync('mkfifo', ['-m', '0600', ...dirs.flatMap((dir) => STREAMS.map((name) => path.join(dir, name)))]);
  } catch (err) {
    throw new KilnError(ERROR_CODES.EXECUTOR, `cannot make the FIFOs of container processes in ${path.dirname(dirs[0] ?? '')}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Opens our ends of the FIFOs makeFifos() made in `dir`, piping output into
 * `proc`'s streams. `closeStdin` tells the shim that stdin has ended, once
 * all of it is in the FIFO. A process on a terminal has no stderr (the
 * shim's pseudo-terminal carries both outputs on stdout); what is typed on
 * the terminal goes through stdin as it is: the terminal is in raw mode from
 * here to close().
 */
export function openFifoIo(dir: string, proc: ProcessSpec, closeStdin: () => Promise<void>): FifoIo {
  const { terminal } = proc;
  const input = terminal?.input ?? proc.stdin;
  const io: ProcessIo = {
    stdin: input === undefined ? '' : path.join(dir, 'stdin'),
    stdout: path.join(dir, 'stdout'),
    stderr: terminal === undefined ? path.join(dir, 'stderr') : '',
    ...(terminal === undefined ? {} : { terminal: true }),
  };
  const readers = [openReader(io.stdout, terminal?.output ?? proc.stdout), ...(terminal === undefined ? [openReader(io.stderr, proc.stderr)] : [])];
  // O_RDWR never blocks and never fails for want of a reader; the shim opens its end during Start.
  const stdin = input === undefined ? undefined : new Socket({ fd: openSync(io.stdin, O_RDWR | O_NONBLOCK), readable: false, writable: true });
  // The process may exit without reading all its input; closing the pipe may report an error. Neither matters.
  stdin?.on('error', () => {});
  stdin?.on('finish', () => void closeStdin().catch(() => {}));
  // Raw before the process starts: what the terminal answers to its first
  // queries (a shell asks where the cursor is) must reach it unechoed.
  terminal?.input.setRawMode(true);
  return {
    io,
    attach() {
      for (const r of readers) r.release();
      if (stdin !== undefined) input?.pipe(stdin);
    },
    async drained() {
      const done = Promise.all(readers.map((r) => r.ended));
      // The guard timer is cancelled once the output ended: left running, it
      // would keep kiln's process alive for its whole length after the build.
      const guard = new AbortController();
      await Promise.race([done, sleep(DRAIN_LIMIT_MS, undefined, { signal: guard.signal }).catch(() => undefined)]);
      guard.abort();
    },
    close() {
      for (const r of readers) r.close();
      if (stdin !== undefined) {
        input?.unpipe(stdin);
        stdin.destroy();
      }
      if (terminal !== undefined) {
        // Nothing reads the terminal any more: it must not keep node running, nor stay raw.
        terminal.input.pause();
        terminal.input.setRawMode(false);
      }
    },
  };
}

interface Reader {
  /** Settles (never rejects) when the shim's end is closed and the data was handed on. */
  readonly ended: Promise<void>;
  /** Drops our placeholder writer, so EOF comes once the shim closes its end. */
  release(): void;
  close(): void;
}

/**
 * Our read end of an output FIFO. Opening it non-blocking returns at once
 * (a blocking open would tie up a thread until the shim opens its end), but
 * a FIFO without writers reads as EOF: a placeholder writer of ours keeps it
 * open until the shim holds its own write end (`release`).
 */
function openReader(file: string, into: ProcessSpec['stdout']): Reader {
  const fd = openSync(file, O_RDONLY | O_NONBLOCK);
  let placeholder: number | undefined = openSync(file, O_WRONLY | O_NONBLOCK);
  const socket = new Socket({ fd, readable: true, writable: false });
  // `end: false` leaves the caller's stream open for whatever it writes after.
  socket.pipe(into, { end: false });
  const ended = finished(socket).catch(() => undefined);
  const release = (): void => {
    if (placeholder === undefined) return;
    closeSync(placeholder);
    placeholder = undefined;
  };
  return {
    ended,
    release,
    close() {
      release();
      socket.unpipe(into);
      socket.destroy();
    },
  };
}
