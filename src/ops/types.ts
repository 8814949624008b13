/**
 * What ops run against: the worker's resources and the caller's bindings.
 * Ops turn a loaded Op into a SolverOp over ResultRef.
 */
import type { ResultRef } from '../cache/types.js';
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
}

/** Makes the solver-facing op of one loaded op. */
export type OpFactory = (op: Op, ctx: OpContext) => SolverOp<ResultRef>;
