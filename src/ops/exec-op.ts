/**
 * exec ops: run a process in a container over mounts prepared from the op's
 * inputs, stream its output to progress, and commit the mounts that are op
 * outputs once it exits with a valid code.
 */
import { randomBytes } from 'node:crypto';
import type { ResultRef } from '../cache/types.js';
import { ERROR_CODES, ExecError, KilnError, OpError } from '../errors.js';
import type { Executor } from '../executor/types.js';
import { opCacheKey } from '../llb/canonical.js';
import { opDisplayName } from '../llb/op-name.js';
import type { Op } from '../llb/types.js';
import type { SolverOp } from '../solver/types.js';
import { processMeta } from './exec/meta.js';
import { prepareMounts } from './exec/mounts.js';
import { processOutput } from './exec/output.js';
import { missingMountpoints, removeStubs } from './exec/stubs.js';
import type { OpContext } from './types.js';

/**
 * Where every executor mounts something of its own. When the rootfs lacks
 * one of these, the runtime creates a stub for it that must not be committed.
 */
const RUNTIME_MOUNTPOINTS = ['/proc', '/dev', '/sys', '/etc/hosts', '/etc/resolv.conf'];

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
  const exec = op.body.exec;
  return {
    cacheKey: async ({ inputKeys }) => opCacheKey(op, inputKeys),
    run: async (inputs, { signal, progress }) => {
      const executor: Executor | undefined = ctx.worker.executor;
      if (executor === undefined) throw noExecutorError(op, ctx.worker.id);
      const prepared = await prepareMounts(op.name, exec.mounts, inputs, ctx.worker.cache, opDisplayName(op));
      try {
        const stubs = await missingMountpoints(prepared.rootfs, [...RUNTIME_MOUNTPOINTS, ...prepared.mounts.map((m) => m.destination)]);
        const meta = await processMeta(exec, prepared.rootfs).catch((err: unknown) => {
          throw err instanceof KilnError ? new OpError(err.code, err.message, { op: op.name, field: `ops.${op.name}.exec.meta`, cause: err }) : err;
        });
        const output = processOutput(op.digest, progress);
        const id = `kiln-${randomBytes(6).toString('hex')}`;
        ctx.logger.debug({ op: op.name, id, args: meta.args }, 'running process');
        const root = [{ type: 'bind', source: prepared.rootfs, options: ['rbind', prepared.rootReadonly ? 'ro' : 'rw'] }];
        const status = await executor
          .run(id, root, prepared.mounts, { meta, stdout: output.stdout, stderr: output.stderr }, { signal })
          .catch((err: unknown) => {
            // Name the op (not the process) in what the user reads; a cancellation stays as it is.
            if (err instanceof KilnError && err.op === undefined && err.code !== ERROR_CODES.CANCELLED) {
              throw new OpError(err.code, err.message, { op: op.name, field: `ops.${op.name}.exec`, cause: err });
            }
            throw err;
          });
        if (!exec.meta.validExitCodes.includes(status.exitCode)) {
          throw new ExecError({ op: op.name, field: `ops.${op.name}.exec.meta.args`, args: exec.meta.args, exitCode: status.exitCode, tail: output.tail() });
        }
        await removeStubs(stubs);
        await prepared.unmount();
        const outputs: ResultRef[] = [];
        try {
          for (const mutable of prepared.outputs) outputs.push(await mutable.commit());
        } catch (err) {
          for (const ref of outputs) await ref?.release();
          throw err;
        }
        return outputs;
      } finally {
        await prepared.release();
      }
    },
  };
}
