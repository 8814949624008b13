/**
 * How the containerd executor reads a failed call: which kind it was,
 * whether containerd went away, and the error a user reads.
 */
import { runtimeError } from '../process-facts.js';
import { ContainerdError, type ContainerdFailure } from './client.js';

/** containerd went away before a process started: `lost` is the call's `unreachable` error. */
export class NotStarted extends Error {
  readonly lost: ContainerdError;
  constructor(lost: ContainerdError) {
    super(lost.message, { cause: lost });
    this.lost = lost;
  }
}

/** Whether `err` is a call that failed because containerd went away. */
export function lostContainerd(err: unknown): err is ContainerdError {
  return failure(err) === 'unreachable';
}

/** The kind of a containerd failure, or undefined for other errors. */
export function failure(err: unknown): ContainerdFailure | undefined {
  return err instanceof ContainerdError ? err.failure : undefined;
}

/** Swallows `err` if it is a containerd failure of one of `kinds`; rethrows anything else. */
export function ignore(err: unknown, ...kinds: ContainerdFailure[]): undefined {
  const kind = failure(err);
  if (kind !== undefined && kinds.includes(kind)) return undefined;
  throw err;
}

/** `err` with what was being done in front: containerd's message alone rarely says (nor which disk is full, among `paths`). */
export function wrap(what: string, err: unknown, paths: readonly string[]): unknown {
  if (!(err instanceof ContainerdError) || err.failure === 'unreachable') return err;
  return runtimeError(what, err.details, { hostPaths: paths, cause: err });
}
