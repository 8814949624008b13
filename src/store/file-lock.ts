/**
 * An exclusive lock on a file, across every kiln process on the root: git
 * sources hold one per bare repository (git's own lock files refuse a second
 * writer rather than wait), the cache one per result only one process should
 * make (an image layer's unpack).
 *
 * The lock is flock(2), held by a `flock` process (util-linux) whose stdin
 * is a pipe from this process. The kernel drops it when that process exits,
 * which it does when we close the pipe or when we die (the pipe closes with
 * us), so a crashed kiln never leaves a stale lock for the next one to guess
 * about, which owner tokens (owner.ts) would have to.
 */
import type { Readable, Writable } from 'node:stream';
import { spawnChild } from '../spawner.js';
import { ERROR_CODES, KilnError } from '../errors.js';

/** A held lock; release (or dispose) exactly once. */
export interface HeldLock extends AsyncDisposable {
  release(): Promise<void>;
}

/** Waits for the exclusive lock on `file` (created if missing); the wait ends with `signal`. */
export async function lockFile(file: string, signal: AbortSignal): Promise<HeldLock> {
  const lock = await takeLock(file, signal, true);
  if (lock === undefined) throw new KilnError(ERROR_CODES.INTERNAL, `flock gave up waiting on ${file}`);
  return lock;
}

/** The exclusive lock on `file` if no one holds it now, else undefined. */
export function tryLockFile(file: string, signal: AbortSignal): Promise<HeldLock | undefined> {
  return takeLock(file, signal, false);
}

/** flock(1)'s exit code when `--nonblock` finds the lock taken. */
const LOCK_TAKEN = 75;

function takeLock(file: string, signal: AbortSignal, wait: boolean): Promise<HeldLock | undefined> {
  signal.throwIfAborted();
  // `cat` holds the lock until its stdin (our pipe) closes.
  const mode = wait ? [] : ['--nonblock', `--conflict-exit-code=${LOCK_TAKEN}`];
  // Through the resident spawner: node's fork of itself costs tens of milliseconds of main-thread time per lock.
  const child = spawnChild({ file: 'flock', args: ['--exclusive', ...mode, file, 'sh', '-c', 'echo locked; exec cat >/dev/null'], stdin: 'pipe', stdout: 'pipe', stderr: 'pipe' });
  const { stdin, stdout, stderr: errors } = child as typeof child & { stdin: Writable; stdout: Readable; stderr: Readable };
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  let stderr = '';
  errors.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise<HeldLock | undefined>((resolve, reject) => {
    const onAbort = (): void => {
      child.kill('SIGKILL');
      reject(signal.reason);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    const release = async (): Promise<void> => {
      stdin.end();
      await exited;
    };
    stdout.once('data', () => {
      signal.removeEventListener('abort', onAbort);
      resolve({ release, [Symbol.asyncDispose]: release });
    });
    child.once('error', (err) => {
      signal.removeEventListener('abort', onAbort);
      reject(new KilnError(ERROR_CODES.CACHE_STORE, `cannot lock ${file}: ${err.message} (is util-linux's flock installed?)`, { cause: err }));
    });
    child.once('close', (code) => {
      signal.removeEventListener('abort', onAbort);
      if (!wait && code === LOCK_TAKEN) resolve(undefined);
      else reject(new KilnError(ERROR_CODES.CACHE_STORE, `cannot lock ${file}: flock exited with ${code ?? 'a signal'}${stderr === '' ? '' : `: ${stderr.trim()}`}`));
    });
  });
}
