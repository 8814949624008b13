/**
 * Running one exec op: prepare its mounts, build the process Meta, run it on
 * the worker's executor with output streamed to progress (secrets masked),
 * and commit the output mounts after a valid exit. Mount stubs the runtime
 * made are removed first, then what overlayfs copied up unchanged, and
 * everything prepared (secret files included) is released on every path.
 * After an invalid exit, with an `onExecError` hook, the writable mounts are
 * committed as the process left them and the hook may open a shell over
 * them (openShell) before the op fails.
 */
import { randomBytes } from 'node:crypto';
import type { ImmutableRef, MutableRef, ResultRef } from '../../cache/types.js';
import { ERROR_CODES, ExecError, KilnError, OpError } from '../../errors.js';
import type { ContainerMount, Executor, ExitStatus, ProcessMeta } from '../../executor/types.js';
import { LayeredTree } from '../../fs/layered-tree.js';
import { opDisplayName } from '../../llb/op-name.js';
import type { Op } from '../../llb/types.js';
import type { SandboxNetwork } from '../../network/types.js';
import type { RunContext } from '../../solver/types.js';
import type { OpContext, ShellOptions } from '../types.js';
import { processMeta } from './meta.js';
import { type PreparedMounts, prepareMounts, treeOfMounts } from './mounts.js';
import { processOutput } from './output.js';
import { secretEnv } from './secrets.js';
import { prepareSshMounts } from './ssh.js';
import { missingMountpoints, removeStubs } from './stubs.js';
import { dropUnchangedCopies } from './unchanged.js';

/** What `runExec` runs. */
export interface RunExecOptions {
  readonly op: ExecOpOf;
  readonly executor: Executor;
  readonly inputs: readonly ResultRef[];
  readonly ctx: OpContext;
  readonly run: RunContext;
}

/** An exec op. */
type ExecOpOf = Op & { body: { kind: 'exec' } };

/** A failure kept for a shell: the error, and the committed writable snapshots by mount index. */
interface KeptFailure {
  readonly error: ExecError;
  readonly kept: ReadonlyMap<number, ImmutableRef>;
}

/** Runs the process of `op` and returns the op's outputs. */
export async function runExec({ op, executor, inputs, ctx, run: { signal, progress } }: RunExecOptions): Promise<ResultRef[]> {
  const exec = op.body.exec;
  const secrets = ctx.secrets ?? new Map<string, Uint8Array>();
  const ran = await withSandbox({ op, executor, inputs, ctx }, signal, async ({ prepared, meta, network }): Promise<{ outputs: ResultRef[] } | KeptFailure> => {
    // The system filesystems' mount points stay, as BuildKit leaves them; the others' stubs go.
    const { ownMountpoints, keptMountpoints = [] } = executor.mountSupport;
    // Stubs only matter in what is committed: the outputs, and with an
    // onExecError hook every writable mount (kept for the shell). A root
    // that is no output, as most are, is discarded whatever it holds, so its
    // stubs are neither looked for before the run nor removed after it.
    const committed = (destination: string): boolean =>
      ctx.onExecError !== undefined || exec.mounts.some((m) => m.type === 'bind' && m.dest === destination && m.output >= 0);
    const stubs = await mountpointStubs(prepared, ownMountpoints.filter((p) => !keptMountpoints.includes(p)), committed);
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
      const error = new ExecError({
        op: op.name,
        field: `ops.${op.name}.exec.meta.args`,
        args: exec.meta.args,
        exitCode: status.exitCode,
        tail: output.tail(),
        ...(unavailable === undefined ? {} : { note: `the container had loopback only, no network: ${unavailable}` }),
      });
      if (ctx.onExecError === undefined) throw error;
      removeStubs(stubs);
      await prepared.unmount();
      return { error, kept: await commitAll(prepared.writable) };
    }
    removeStubs(stubs);
    await prepared.unmount();
    // Unmounted now: what overlayfs copied up without a change is not the process's work.
    for (const output of prepared.outputs) {
      const tree = treeOfMounts(await output.mounts());
      if (tree !== undefined) await dropUnchangedCopies(tree);
    }
    return { outputs: [...(await commitAll(new Map(prepared.outputs.entries()))).values()] };
  });
  if ('outputs' in ran) return ran.outputs;
  // Everything of the run is released now (a locked cache mount too, which the shell takes again).
  await handOver({ op, executor, inputs, ctx }, ran, signal);
  throw ran.error;
}

/** What runs in a sandbox: an exec op's mounts over refs (by the mounts' input indices), on an executor. */
export interface ShellTarget {
  /** The op: its mounts, meta, network and security mode are the shell's (its args are replaced). */
  readonly op: ExecOpOf;
  /** The refs the op's mounts name by input index; the caller holds them while the shell runs. */
  readonly inputs: readonly ResultRef[];
  readonly executor: Executor;
  /** The worker (its cache and network), secrets, ssh sockets and logger. */
  readonly ctx: OpContext;
}

/**
 * Opens a shell on `options.terminal` in a new container over `target`'s
 * mounts: writable ones over fresh snapshots of their inputs (discarded
 * after), the others as the step had them, with the step's env, working
 * directory, user and network mode. Resolves with the shell's exit status
 * once its container, mounts and network are released. Used for a step
 * that just failed (FailedExec.shell); a kept result (a history record) can
 * be opened the same way.
 */
export async function openShell(target: ShellTarget, options: ShellOptions): Promise<ExitStatus> {
  const signal = options.signal ?? new AbortController().signal;
  return withSandbox(target, signal, async ({ prepared, meta, network }) =>
    target.executor.run({
      id: `kiln-shell-${randomBytes(6).toString('hex')}`,
      root: { mounts: prepared.root.mounts, readonly: prepared.root.readonly },
      mounts: prepared.mounts,
      // The terminal carries the shell's output: the streams get nothing.
      process: { meta: { ...meta, args: options.args ?? DEFAULT_SHELL }, stdout: options.terminal.output, stderr: options.terminal.output, terminal: options.terminal },
      ...(network.kind === 'namespace' ? { network: network.lease } : {}),
      signal,
    }),
  );
}

/** The shell a FailedExec opens when no command is given. */
const DEFAULT_SHELL = ['/bin/sh'];

/**
 * Gives the caller's hook the failed step (FailedExec), then releases what
 * was kept for it. The op fails with its ExecError whatever the hook does;
 * a hook that throws is logged.
 */
async function handOver(target: ShellTarget, failure: KeptFailure, signal: AbortSignal): Promise<void> {
  const { op, inputs, ctx } = target;
  const kept = [...failure.kept.entries()];
  try {
    // Each writable mount now reads the snapshot the process left: an input of its own, after the op's.
    const mounts = op.body.exec.mounts.map((m, index) => {
      const at = kept.findIndex(([i]) => i === index);
      return at < 0 || m.type !== 'bind' ? m : { ...m, input: inputs.length + at };
    });
    const shellTarget: ShellTarget = {
      ...target,
      op: { ...op, body: { ...op.body, exec: { ...op.body.exec, mounts } } },
      inputs: [...inputs, ...kept.map(([, ref]) => ref)],
    };
    let open: Promise<unknown> = Promise.resolve();
    await ctx.onExecError?.({
      op: op.name,
      error: failure.error,
      shell: (options) => {
        // One at a time: a second shell waits for the first to end.
        const run = open.then(() => openShell(shellTarget, { signal, ...options }));
        open = run.catch(() => undefined);
        return run;
      },
    });
  } catch (err) {
    ctx.logger.warn({ op: op.name, err }, 'the exec error hook failed');
  } finally {
    for (const [, ref] of kept.reverse()) await ref.release();
  }
}

interface Sandbox {
  readonly prepared: PreparedMounts;
  readonly meta: ProcessMeta;
  readonly network: SandboxNetwork;
}

/**
 * Prepares everything a process of `target`'s op runs in (ssh sockets, the
 * mounts, the process meta with secret env, a network), calls `use` with
 * it, and releases all of it, in reverse order, on every path.
 */
async function withSandbox<T>(target: ShellTarget, signal: AbortSignal, use: (sandbox: Sandbox) => Promise<T>): Promise<T> {
  const { op, executor, inputs, ctx } = target;
  const exec = op.body.exec;
  const secrets = ctx.secrets ?? new Map<string, Uint8Array>();
  const env = secretEnv(op.name, exec, secrets);
  // The network is asked for first and awaited last: taking a namespace
  // (a spare, a parked one, or a new one through CNI) overlaps the mounts'
  // preparation instead of following it. It is given back on every path,
  // whether or not the run got as far as using it.
  await using network = networkAhead(sandboxNetwork(op, ctx, exec.security !== 'insecure'));
  // Each ssh mount is a socket kiln proxies to the agent, for this run only.
  await using ssh = await prepareSshMounts(op.name, exec, ctx.ssh ?? new Map<string, string>());
  const prepared = await prepareMounts({
    opName: op.name,
    mounts: exec.mounts,
    inputs,
    cache: ctx.worker.cache,
    ...(ctx.seedCacheMount === undefined ? {} : { seedCacheMount: ctx.seedCacheMount }),
    description: opDisplayName(op),
    secrets,
    signal,
    sshMounts: ssh.mounts,
    support: executor.mountSupport,
  });
  try {
    const plainMeta = await processMeta(exec, prepared.root.tree).catch((err: unknown) => {
      throw err instanceof KilnError ? new OpError(err.code, err.message, { op: op.name, field: `ops.${op.name}.exec.meta`, cause: err }) : err;
    });
    const extraEnv = [...env, ...ssh.env];
    const withEnv = extraEnv.length === 0 ? plainMeta : { ...plainMeta, env: [...plainMeta.env, ...extraEnv] };
    const taken = await network.ready;
    // The `host` provider gives sandboxed containers the host's network.
    const meta = taken.kind === 'host' ? { ...withEnv, network: 'host' as const } : withEnv;
    return await use({ prepared, meta, network: taken });
  } finally {
    await prepared.release();
  }
}

/**
 * Commits each snapshot in order (by output or mount index). When one
 * fails, those already committed are released (the caller gets none of
 * them), and the rest stay for the preparation's release to discard.
 */
async function commitAll(writable: ReadonlyMap<number, MutableRef>): Promise<Map<number, ImmutableRef>> {
  const committed = new Map<number, ImmutableRef>();
  try {
    for (const [index, mutable] of writable) committed.set(index, await mutable.commit());
  } catch (err) {
    for (const ref of [...committed.values()].reverse()) await ref.release();
    throw err;
  }
  return committed;
}

/** The network of one run, given back when the run ends (`await using`). */
type HeldNetwork = SandboxNetwork & AsyncDisposable;

/**
 * A network asked for now and awaited later (`ready`), given back when
 * disposed whether or not anyone awaited it: a failure before the run
 * releases it too, and a refusal is not an unhandled rejection meanwhile.
 */
function networkAhead(pending: Promise<HeldNetwork>): { readonly ready: Promise<HeldNetwork> } & AsyncDisposable {
  pending.catch(() => undefined);
  return { ready: pending, [Symbol.asyncDispose]: async () => (await pending.catch(() => undefined))?.[Symbol.asyncDispose]() };
}

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
 * The stubs the runtime may create for the mount points (its own, and
 * `prepared`'s) in what will be `committed` (by mount destination), each
 * looked for in
 * what holds it: the writable bind mount it is nested in (an output mount
 * would otherwise keep an empty file where a secret was bound), else the
 * root. Mount points inside a tmpfs leave nothing behind.
 */
async function mountpointStubs(prepared: PreparedMounts, runtimeMountpoints: readonly string[], committed: (destination: string) => boolean): Promise<string[]> {
  const byHolder = new Map<ContainerMount | undefined, string[]>();
  for (const dest of [...runtimeMountpoints, ...prepared.mounts.map((m) => m.destination)]) {
    const holder = prepared.mounts
      .filter((m) => dest.startsWith(`${m.destination}/`))
      .reduce<ContainerMount | undefined>((deepest, m) => (deepest === undefined || m.destination.length > deepest.destination.length ? m : deepest), undefined);
    byHolder.set(holder, [...(byHolder.get(holder) ?? []), holder === undefined ? dest : dest.slice(holder.destination.length)]);
  }
  const stubs: string[] = [];
  for (const [holder, dests] of byHolder) {
    if (!committed(holder?.destination ?? '/')) continue;
    if (holder === undefined) stubs.push(...(await missingMountpoints(prepared.root.tree, dests)));
    else if (holder.type === 'bind') stubs.push(...(await missingMountpoints(LayeredTree.ofDirectory(holder.source), dests)));
  }
  return stubs;
}
