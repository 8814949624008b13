/**
 * Source ops: the solver's view of a source instance (see source/types.ts).
 * Which scheme does what is the source registry's business, not this file's.
 */
import type { ResultRef } from '../cache/types.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import type { Op } from '../llb/types.js';
import type { SolverOp } from '../solver/types.js';
import type { OpContext } from './types.js';

/** The solver op of a `source` op. */
export function sourceOp(op: Op & { body: { kind: 'source' } }, ctx: OpContext): SolverOp<ResultRef> {
  if (ctx.source === undefined) throw new KilnError(ERROR_CODES.INTERNAL, `source op "${op.name}" has no source instance`);
  const instance = ctx.source(op);
  return {
    cacheKey: ({ signal, progress }) => instance.cacheKey(signal, progress),
    run: async (_inputs, { signal, progress }) => [await instance.snapshot(ctx.worker.cache, signal, progress)],
  };
}
