/**
 * merge and diff: pure snapshot algebra, delegated to the cache manager (on
 * overlayfs neither copies any file when the layers line up).
 */
import type { ResultRef } from '../cache/types.js';
import { opCacheKey } from '../llb/canonical.js';
import type { Op } from '../llb/types.js';
import type { SolverOp } from '../solver/types.js';
import type { OpContext } from './types.js';
import { opDisplayName } from '../llb/op-name.js';
import { inputAt } from './inputs.js';

/** The solver op of a `merge` op. */
export function mergeOp(op: Op & { body: { kind: 'merge' } }, ctx: OpContext): SolverOp<ResultRef> {
  const { inputs: indexes } = op.body.merge;
  return {
    cacheKey: async ({ inputKeys }) => opCacheKey(op, inputKeys),
    run: async (inputs) => [
      await ctx.worker.cache.merge(
        indexes.map((i) => inputAt(inputs, i)),
        { description: opDisplayName(op) },
      ),
    ],
  };
}

/** The solver op of a `diff` op. */
export function diffOp(op: Op & { body: { kind: 'diff' } }, ctx: OpContext): SolverOp<ResultRef> {
  const { lower, upper } = op.body.diff;
  return {
    cacheKey: async ({ inputKeys }) => opCacheKey(op, inputKeys),
    run: async (inputs) => [
      await ctx.worker.cache.diff(inputAt(inputs, lower), inputAt(inputs, upper), { description: opDisplayName(op) }),
    ],
  };
}
