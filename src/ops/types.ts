/**
 * What ops run against: the worker's resources and the caller's bindings.
 * Ops turn a loaded Op into a SolverOp over ResultRef.
 */
import type { ResultRef } from '../cache/types.js';
import type { ExecError } from '../errors.js';
import type { ExitStatus, ProcessTerminal } from '../executor/types.js';
import type { Logger } from '../log.js';
import type { Op } from '../llb/types.js';
import type { StepLogs } from '../progress/step-logs.js';
import type { SolverOp } from '../solver/types.js';
import type { SourceInstance, SourceOpOf } from '../source/types.js';
import type { Worker } from '../worker/types.js';

export interface OpContext {
  readonly worker: Worker;
  readonly logger: Logger;
  /** Build secrets by id (`--secret`), for exec ops' secret mounts and secretEnv. */
  readonly secrets?: ReadonlyMap<string, Uint8Array>;
  /** SSH agent sockets by id (`--ssh`), for exec ops' ssh mounts. */
  readonly ssh?: ReadonlyMap<string, string>;
  /** Where exec ops send their whole output, unclipped (the build history); absent: only progress gets it. */
  readonly logs?: StepLogs;
  /** The instance of a source op in this solve (made by the source registry). */
  readonly source?: (op: SourceOpOf) => SourceInstance;
  /** Called when an exec op's process exits with a code the op does not accept (see FailedExec). */
  readonly onExecError?: (failure: FailedExec) => Promise<void>;
  /** Fills a cache mount made for the first time from an imported cache (`--import-cache`). */
  readonly seedCacheMount?: CacheMountSeeder;
}

/** Fills `dir`, new cache mount `id`, from an imported cache; false when no imported cache carries the id. */
export type CacheMountSeeder = (id: string, dir: string, signal: AbortSignal) => Promise<boolean>;

/** How a shell is opened in a step. */
export interface ShellOptions {
  /** The terminal the shell runs on (its controlling TTY). */
  readonly terminal: ProcessTerminal;
  /** The shell's command; default `['/bin/sh']`. */
  readonly args?: readonly string[];
  /** Stops the shell (SIGTERM, then SIGKILL); the call then rejects with the reason. */
  readonly signal?: AbortSignal;
}

/**
 * An exec step whose process failed, kept as it was at the failure: its
 * root and writable mounts were committed as the process left them, as
 * BuildKit's ExecError keeps them. Until the hook that got it returns, a
 * shell can be opened there, in a new container over fresh snapshots of
 * those, with the step's other mounts (read-only inputs, cache mounts,
 * secrets, ssh sockets, tmpfs), env, working directory, user and network
 * mode. Once the hook returns, all of it is released and the op fails with
 * `error`.
 */
export interface FailedExec {
  /** The op's name. */
  readonly op: string;
  readonly error: ExecError;
  /**
   * Runs a shell (or `args`) on `terminal` in the failed step; resolves with
   * its exit status once it has exited and its container, mounts and
   * network are released. One at a time.
   */
  shell(options: ShellOptions): Promise<ExitStatus>;
}

/** Makes the solver-facing op of one loaded op. */
export type OpFactory = (op: Op, ctx: OpContext) => SolverOp<ResultRef>;
