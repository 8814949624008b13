/**
 * Running one exec op: prepare its mounts, build the process Meta, run it on
 * the worker's executor with output streamed to progress (secrets masked),
 * and commit the output mounts after a valid exit. Mount stubs the runtime
 * made are removed first, then what overlayfs copied up unchanged, and
 * everything prepared (secret files included) is released on every path.
 */
import { randomBytes } from 'node:crypto';
import type { ImmutableRef, MutableRef, ResultRef } from '../../cache/types.js';
import { ERROR_CODES, ExecError, KilnError, OpError } from '../../errors.js';
import type { ContainerMount, Executor } from '../../executor/types.js';
import { LayeredTree } from '../../fs/layered-tree.js';
import { opDisplayName } from '../../llb/op-name.js';
import type { Op } from '../../llb/types.js';
import type { SandboxNetwork } from '../../network/types.js';
import type { RunContext } from '../../solver/types.js';
import type { OpContext } from '../types.js';
import { processMeta } from './meta.js';
import { type PreparedMounts, prepareMounts, treeOfMounts } from './mounts.js';
import { processOutput } from './output.js';
import { secretEnv } from './secrets.js';
import { prepareSshMounts } from './ssh.js';
import { missingMountpoints, removeStubs } from './stubs.js';
import { dropUnchangedCopies } from './unchanged.js';

/** What `runExec` runs. */
export interface RunExecOptions {
  readonly op: Op & { body: { kind: 'exec' } };
  readonly executor: Executor;
  readonly inputs: readonly ResultRef[];
  readonly ctx: OpContext;
  readonly run: RunContext;
}

/** Runs the process of `op` and returns the op's outputs. */
export async function runExec({ op, executor, inputs, ctx, run: { signal, progress } }: RunExecOptions): Promise<ResultRef[]> {
  const exec = op.body.exec;
  const secrets = ctx.secrets ?? new Map<string, Uint8Array>();
  const env = secretEnv(op.name, exec, secrets);
  // Each ssh mount is a socket kiln proxies to the agent, for this run only.
  await using ssh = await prepareSshMounts(op.name, exec, ctx.ssh ?? new Map<string, string>());
  const prepared = await prepareMounts({
    opName: op.name,
    mounts: exec.mounts,
    inputs,
    cache: ctx.worker.cache,
    description: opDisplayName(op),
    secrets,
    signal,
    sshMounts: ssh.mounts,
    support: executor.mountSupport,
  });
  try {
    // The system filesystems' mount points stay, as BuildKit leaves them; the others' stubs go.
    const { ownMountpoints, keptMountpoints = [] } = executor.mountSupport;
    const stubs = await mountpointStubs(prepared, ownMountpoints.filter((p) => !keptMountpoints.includes(p)));
    const plainMeta = await processMeta(exec, prepared.root.tree).catch((err: unknown) => {
      throw err instanceof KilnError ? new OpError(err.code, err.message, { op: op.name, field: `ops.${op.name}.exec.meta`, cause: err }) : err;
    });
    const extraEnv = [...env, ...ssh.env];
    const withEnv = extraEnv.length === 0 ? plainMeta : { ...plainMeta, env: [...plainMeta.env, ...extraEnv] };
    await using network = await sandboxNetwork(op, ctx, exec.security !== 'insecure');
    // The `host` provider gives sandboxed containers the host's network.
    const meta = network.kind === 'host' ? { ...withEnv, network: 'host' as const } : withEnv;
    // Every secret of the build is masked, not only this op's: an input may hold one too.
    const output = processOutput(op.digest, progress, [...secrets.values()], ctx.logs?.open(op.digest));
    const id = `kiln-${randomBytes(6).toString('hex')}`;
    ctx.logger.debug({ op: op.name, id, args: meta.args }, 'running process');
    const status = await executor
      .run({
        id,
        root: { mounts: prepared.root.mounts, readonly: prepared.root.readonly },
        mounts: prepared.mounts,
        process: { meta, stdout: output.stdout, stderr: output.stderr },
        ...(network.kind === 'namespace' ? { network: network.lease } : {}),
        signal,
      })
      .finally(() => output.flush())
      .catch((err: unknown) => {
        // Name the op (not the process) in what the user reads; a cancellation stays as it is.
        if (err instanceof KilnError && err.op === undefined && err.code !== ERROR_CODES.CANCELLED) {
          throw new OpError(err.code, err.message, { op: op.name, field: `ops.${op.name}.exec`, cause: err });
        }
        throw err;
      });
    if (!exec.meta.validExitCodes.includes(status.exitCode)) {
      // A step that needed the network fails in ways that do not say so ("bad address"): say it here.
      const unavailable = network.kind === 'loopback' ? network.unavailable : undefined;
      throw new ExecError({
        op: op.name,
        field: `ops.${op.name}.exec.meta.args`,
        args: exec.meta.args,
        exitCode: status.exitCode,
        tail: output.tail(),
        ...(unavailable === undefined ? {} : { note: `the container had loopback only, no network: ${unavailable}` }),
      });
    }
    removeStubs(stubs);
    await prepared.unmount();
    // Unmounted now: what overlayfs copied up without a change is not the process's work.
    for (const output of prepared.outputs) {
      const tree = treeOfMounts(await output.mounts());
      if (tree !== undefined) await dropUnchangedCopies(tree);
    }
    return await commitOutputs(prepared.outputs);
  } finally {
    await prepared.release();
  }
}

/** The network of one run, given back when the run ends (`await using`). */
type HeldNetwork = SandboxNetwork & AsyncDisposable;

/**
 * Takes a network namespace from the worker's provider for a sandboxed op;
 * `none` and `host` ops need none. `reusable`: the process cannot change
 * the namespace (no CAP_NET_ADMIN), so it may serve the next container.
 */
async function sandboxNetwork(op: Op & { body: { kind: 'exec' } }, ctx: OpContext, reusable: boolean): Promise<HeldNetwork> {
  const mode = op.body.exec.network;
  const network: SandboxNetwork =
    mode === 'sandbox'
      ? await ctx.worker.network.acquire().catch((err: unknown) => {
          throw err instanceof KilnError ? new OpError(err.code, err.message, { op: op.name, field: `ops.${op.name}.exec.network`, cause: err }) : err;
        })
      : { kind: 'loopback' };
  return {
    ...network,
    [Symbol.asyncDispose]: () => {
      if (network.kind === 'namespace') network.lease.release({ reusable });
      return Promise.resolve();
    },
  };
}

/**
 * Commits each output in order. When one fails, the outputs already
 * committed are released (the caller gets none of them), and the rest stay
 * for the preparation's release to discard.
 */
async function commitOutputs(mutables: readonly MutableRef[]): Promise<ResultRef[]> {
  const outputs: ImmutableRef[] = [];
  try {
    for (const mutable of mutables) outputs.push(await mutable.commit());
  } catch (err) {
    for (const ref of outputs.reverse()) await ref.release();
    throw err;
  }
  return outputs;
}

/**
 * The stubs the runtime may create for the mount points (its own, and
 * `prepared`'s), each looked for in
 * what holds it: the writable bind mount it is nested in (an output mount
 * would otherwise keep an empty file where a secret was bound), else the
 * root. Mount points inside a tmpfs leave nothing behind.
 */
async function mountpointStubs(prepared: PreparedMounts, runtimeMountpoints: readonly string[]): Promise<string[]> {
  const byHolder = new Map<ContainerMount | undefined, string[]>();
  for (const dest of [...runtimeMountpoints, ...prepared.mounts.map((m) => m.destination)]) {
    const holder = prepared.mounts
      .filter((m) => dest.startsWith(`${m.destination}/`))
      .reduce<ContainerMount | undefined>((deepest, m) => (deepest === undefined || m.destination.length > deepest.destination.length ? m : deepest), undefined);
    byHolder.set(holder, [...(byHolder.get(holder) ?? []), holder === undefined ? dest : dest.slice(holder.destination.length)]);
  }
  const stubs: string[] = [];
  for (const [holder, dests] of byHolder) {
    if (holder === undefined) stubs.push(...(await missingMountpoints(prepared.root.tree, dests)));
    else if (holder.type === 'bind') stubs.push(...(await missingMountpoints(LayeredTree.ofDirectory(holder.source), dests)));
  }
  return stubs;
}
