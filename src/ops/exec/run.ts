/**
 * Running one exec op: prepare its mounts, build the process Meta, run it on
 * the worker's executor with output streamed to progress, and commit the
 * output mounts after a valid exit. Mount stubs the runtime made are removed
 * first, and everything prepared is released on every path.
 */
import { randomBytes } from 'node:crypto';
import type { ResultRef } from '../../cache/types.js';
import { ERROR_CODES, ExecError, KilnError, OpError } from '../../errors.js';
import type { Executor } from '../../executor/types.js';
import { opDisplayName } from '../../llb/op-name.js';
import type { Op } from '../../llb/types.js';
import type { RunContext } from '../../solver/types.js';
import type { OpContext } from '../types.js';
import { processMeta } from './meta.js';
import { prepareMounts } from './mounts.js';
import { processOutput } from './output.js';
import { missingMountpoints, removeStubs } from './stubs.js';

/**
 * Where every executor mounts something of its own. When the rootfs lacks
 * one of these, the runtime creates a stub for it that must not be committed.
 */
const RUNTIME_MOUNTPOINTS = ['/proc', '/dev', '/sys', '/etc/hosts', '/etc/resolv.conf'];

/** Runs the process of `op` and returns the op's outputs. */
export async function runExec(
  op: Op & { body: { kind: 'exec' } },
  executor: Executor,
  inputs: readonly ResultRef[],
  ctx: OpContext,
  { signal, progress }: RunContext,
): Promise<ResultRef[]> {
  const exec = op.body.exec;
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
}
