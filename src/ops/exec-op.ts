/**
 * exec ops: run a process in a container over mounts prepared from the op's
 * inputs, stream its output to progress, and commit the mounts that are op
 * outputs once it exits with a valid code (./exec/run.ts).
 */
import type { ResultRef } from '../cache/types.js';
import { ERROR_CODES, OpError } from '../errors.js';
import { opCacheKey } from '../llb/canonical.js';
import type { Op } from '../llb/types.js';
import type { SolverOp } from '../solver/types.js';
import type { OpContext } from './types.js';

/** The error for an exec op on a worker that cannot run processes. */
export function noExecutorError(op: Op, workerId: string): OpError {
  return new OpError(
    ERROR_CODES.NO_EXECUTOR,
    `op "${op.name}" runs a process, but worker "${workerId}" has no executor (exec ops need the runc or containerd executor)`,
    { op: op.name, field: `ops.${op.name}.exec` },
  );
}

/** The solver op of an `exec` op. */
export function execOp(op: Op & { body: { kind: 'exec' } }, ctx: OpContext): SolverOp<ResultRef> {
  return {
    cacheKey: async ({ inputKeys }) => opCacheKey(op, inputKeys),
    run: async (inputs, runCtx) => {
      if (ctx.worker.executor === undefined) throw noExecutorError(op, ctx.worker.id);
      // Loaded when a process actually runs: a cached build never pays for it.
      const { runExec } = await import('./exec/run.js');
      return runExec({ op, executor: ctx.worker.executor, inputs, ctx, run: runCtx });
    },
    // The op waits on its container's process: the CPU count does not cap it (the solve's parallelism does).
    spends: 'wait',
    // Setting up a network namespace takes a few hundred milliseconds, and
    // the executor has its own preparation (for one whose setup waits for its
    // first container, executor/deferred.ts, that setup first): both start
    // while the inputs are made (a failed setup is the run's to report).
    willRun: () => {
      ctx.worker.executor?.prewarm?.();
      if (op.body.exec.network === 'sandbox') ctx.worker.network.prewarm(1);
    },
  };
}
