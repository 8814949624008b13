/**
 * What ops run against: the worker's resources and the caller's bindings.
 * Ops turn a loaded Op into a SolverOp over ResultRef.
 */
import type { ResultRef } from '../cache/types.js';
import type { Logger } from '../log.js';
import type { Op } from '../llb/types.js';
import type { SolverOp } from '../solver/types.js';
import type { ImageContext } from '../source/image/types.js';
import type { FileHashCache } from '../source/local/checksum.js';
import type { Worker } from '../worker/types.js';

export interface OpContext {
  readonly worker: Worker;
  /** `--local NAME=DIR` bindings (absolute dirs). */
  readonly locals: ReadonlyMap<string, string>;
  readonly logger: Logger;
  /** Build secrets by id (`--secret`), for exec ops' secret mounts and secretEnv. */
  readonly secrets?: ReadonlyMap<string, Uint8Array>;
  /** SSH agent sockets by id (`--ssh`), for exec ops' ssh mounts. */
  readonly ssh?: ReadonlyMap<string, string>;
  /** The local sources' file-hash index (the session's); without it every file is read. */
  readonly localHashes?: FileHashCache;
  /** The content store, registry and OCI layouts, for docker-image and oci-layout sources. */
  readonly images?: ImageContext;
}

/** Makes the solver-facing op of one loaded op. */
export type OpFactory = (op: Op, ctx: OpContext) => SolverOp<ResultRef>;
