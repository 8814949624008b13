/**
 * The containerd executor: each run is a containerd container (metadata:
 * the OCI spec, an owner label) and its task (the process, run by the runc
 * shim; runc mounts the root inside the container's mount namespace, as
 * for the runc executor, so the shim mounts nothing and nothing of the root
 * outlives the process). A run is over once its process exited and its
 * output ended; the task's delete (runc delete, the shim's cleanup, ~15-20%
 * of a short run) goes on in the background. Streams go through FIFOs in a
 * directory of ours under STATE, named `OWNER-ID`. The owner label and the
 * directory names let a new executor clean what a crashed kiln process left
 * in the namespace, and only that.
 *
 * The parts, each in its own file: the shim group every container joins
 * (./shim-group.ts), the pool of process directories (./process-dirs.ts),
 * the watcher of task deletes (./task-deletes.ts), the runc the shim runs
 * for our tasks (./shim-runc.ts), and the removal of containers
 * (./cleanup.ts). What is here is a run: its one retry, and
 * the supervision of a process. It talks to containerd through
 * ContainerdApi, so its logic is tested against a scripted fake.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ERROR_CODES, KilnError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { currentOwner, isOwnerAlive } from '../../owner.js';
import { MAX_MOUNT_OPTIONS } from '../../snapshot/mounting.js';
import { containerSpec, type HostFacts, hostFacts } from '../container-spec.js';
import { OCI_OWN_MOUNTPOINTS, OCI_SYSTEM_MOUNTPOINTS, ociJson, ociProcess, onTerminal, terminalSize } from '../oci-spec.js';
import type { Mount } from '../../snapshot/types.js';
import { boundingCapabilities, exitStatus, flushed, hostPaths, sandboxSeccomp, type SandboxSeccomp } from '../process-facts.js';
import type { ExecOptions, Executor, ExitStatus, MountSupport, ProcessSpec, RunOptions, SeccompStatus } from '../types.js';
import { destroyContainer, Leftovers, removeDeadDirs } from './cleanup.js';
import { ContainerdError, connectContainerd, type ContainerdApi, type ProcessIo, type ProcessRef, type TaskOptions } from './client.js';
import { openFifoIo } from './fifo-io.js';
import { failure, ignore, lostContainerd, NotStarted, wrap } from './failures.js';
import { ProcessDirs } from './process-dirs.js';
import { OWNER_LABEL, RUNTIME, ShimGroup } from './shim-group.js';
import { ShimRunc, type TaskRunc } from './shim-runc.js';
import { TaskDeletes } from './task-deletes.js';

export { RUNTIME, SHIM_GROUP_ANNOTATION } from './shim-group.js';

/** Options of `createContainerdExecutor`. */
export interface ContainerdExecutorOptions {
  /** containerd's socket: `unix:///run/containerd/containerd.sock` or a path. */
  readonly address: string;
  /** The containerd namespace kiln's containers live in; default `kiln`. */
  readonly namespace?: string;
  /** Where the FIFOs and hosts files of running containers live; every kiln process on a root uses the same one. */
  readonly stateDir: string;
  /** Where an older kiln kept them (under its root): what dead processes left there goes, then the directory once empty. */
  readonly formerStateDir?: string;
  readonly logger?: Logger;
  /** How long a cancelled process has between SIGTERM and SIGKILL; default 10 s. */
  readonly killGraceMs?: number;
  /**
   * Start the shim group (its anchor's task) now, in the background, rather
   * than in the first run: a worker made when a build starts has its shim
   * (~0.3 s) while the build resolves and keys its graph. Default false.
   */
  readonly startShim?: boolean;
  /** The seccomp profile of sandboxed containers; default SECCOMP_PROFILE. Without the file they run without seccomp (logged). */
  readonly seccompProfile?: string;
  /**
   * Have the shim run a sealed copy of runc (see shim-runc.ts) rather than
   * its own `runc`; default true. Where the copy cannot be made, the shim
   * runs its own.
   */
  readonly sealedRunc?: boolean;
}

/** containerd's rule for identifiers; it also keeps `/` and `..` out of our directory names. */
const ID_RE = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;
const ID_MAX = 76;
const SIGNALS = os.constants.signals;

/**
 * Creates the containerd executor: checks that containerd answers at
 * `address`, then removes the containers and tasks that dead kiln processes
 * left in the namespace. Fails with an EXECUTOR error naming the socket when
 * containerd is not reachable.
 */
export async function createContainerdExecutor(options: ContainerdExecutorOptions): Promise<Executor> {
  const client = await connectContainerd({ address: options.address, ...(options.namespace === undefined ? {} : { namespace: options.namespace }) });
  try {
    await client.version();
    const stateDir = path.resolve(options.stateDir);
    await mkdir(stateDir, { recursive: true, mode: 0o700 });
    const seccomp = await sandboxSeccomp(options.seccompProfile);
    if (!seccomp.status.enabled) options.logger?.warn({ reason: seccomp.status.reason }, 'sandboxed containers run without seccomp');
    const executor = containerdExecutorOver(client, {
      stateDir,
      // Sealed while containerd is asked and what dead processes left is found.
      runc: new ShimRunc({ stateDir, seal: options.sealedRunc ?? true, logger: options.logger }),
      capabilities: await boundingCapabilities(),
      seccomp,
      killGraceMs: options.killGraceMs ?? 10_000,
      logger: options.logger,
    });
    await executor.recover();
    if (options.formerStateDir !== undefined) await removeDeadDirs(options.formerStateDir, { thenEmpty: true });
    if (options.startShim === true) executor.prepare();
    return executor;
  } catch (err) {
    client.close();
    throw err;
  }
}

/** What the executor holds besides its client. */
export interface ContainerdExecutorInit {
  /** An existing directory of ours. */
  readonly stateDir: string;
  /** The runc the shim runs for our tasks; none: the shim's own. */
  readonly runc?: TaskRunc;
  /** What `security: insecure` grants: what this process holds (containerd's shim is assumed to hold as much). */
  readonly capabilities: readonly string[];
  readonly seccomp: SandboxSeccomp;
  readonly killGraceMs: number;
  readonly logger: Logger | undefined;
}

/** The executor over `client` (which it closes on close()), without checks or recovery: for tests with a fake client. */
export function containerdExecutorOver(client: ContainerdApi, init: ContainerdExecutorInit): Executor & { recover(): Promise<void>; prepare(): void } {
  return new ContainerdExecutor(client, init);
}

/** How one process is started and supervised. */
interface ProcessControl {
  readonly signal: AbortSignal | undefined;
  readonly started: (() => void) | undefined;
  /** Creates the process (a task, or an exec'd process) over the FIFOs, without starting it. */
  readonly create: (io: ProcessIo) => Promise<void>;
  /** Deletes the exited process, or starts to; what it awaits ends before the run's output is read to its end. */
  readonly delete: () => Promise<void>;
  /** What is being done, for error messages. */
  readonly what: string;
  /** The host paths the process uses, to name the one that is full if containerd says so. */
  readonly hostPaths: readonly string[];
}

class ContainerdExecutor implements Executor {
  readonly name = 'containerd';
  /** runc mounts a root overlay with one mount(2) call, as for the runc executor. */
  readonly mountSupport: MountSupport = { ownMountpoints: OCI_OWN_MOUNTPOINTS, keptMountpoints: OCI_SYSTEM_MOUNTPOINTS, maxOverlayOptions: MAX_MOUNT_OPTIONS };
  readonly seccomp: SeccompStatus;
  readonly #host: HostFacts;
  readonly #client: ContainerdApi;
  readonly #stateDir: string;
  readonly #killGraceMs: number;
  readonly #logger: Logger | undefined;
  readonly #group: ShimGroup;
  readonly #dirs: ProcessDirs;
  readonly #deletes: TaskDeletes;
  readonly #leftovers: Leftovers;
  readonly #runc: TaskRunc | undefined;
  /** The runc options of our tasks, once known. */
  readonly #taskOptions: Promise<TaskOptions>;
  /** Cleanups of finished runs, going on while the build goes on. */
  readonly #cleanups = new Set<Promise<void>>();
  /** Runs retried under another container id: the run's id -> the container's. */
  readonly #renamed = new Map<string, string>();

  constructor(client: ContainerdApi, init: ContainerdExecutorInit) {
    this.#client = client;
    this.#stateDir = init.stateDir;
    this.#host = hostFacts(init.capabilities, init.seccomp);
    this.seccomp = init.seccomp.status;
    this.#killGraceMs = init.killGraceMs;
    this.#logger = init.logger;
    this.#runc = init.runc;
    this.#taskOptions = (init.runc?.binary() ?? Promise.resolve(undefined)).then((runcBinary) => (runcBinary === undefined ? {} : { runcBinary }));
    this.#group = new ShimGroup({ client, stateDir: init.stateDir, capabilities: init.capabilities, taskOptions: this.#taskOptions, logger: init.logger });
    this.#dirs = new ProcessDirs(init.stateDir);
    this.#deletes = new TaskDeletes(client);
    this.#leftovers = new Leftovers(client, init.logger);
  }

  async close(): Promise<void> {
    await Promise.all(this.#cleanups);
    this.#deletes.close();
    await this.#dirs.close();
    await this.#group.close();
    // Every task is deleted: no runc call is left to make.
    await this.#runc?.close();
    this.#client.close();
  }

  /** Starts what the first run needs and does not depend on it (the shim group's anchor, process directories), in the background. */
  prepare(): void {
    void this.#group.annotations();
    this.#dirs.prefill();
  }

  async run(options: RunOptions): Promise<ExitStatus> {
    checkId(options.id);
    options.signal?.throwIfAborted();
    this.#deletes.runStarted();
    try {
      return await this.#runRetrying(options);
    } finally {
      this.#deletes.runEnded();
    }
  }

  /** run(), which runs the container again once if containerd went away before it started. */
  async #runRetrying(options: RunOptions): Promise<ExitStatus> {
    const { id } = options;
    await this.#leftovers.remove();
    // The first run makes the first batch of process directories while the anchor is made.
    this.#dirs.prefill();
    const annotations = await this.#group.annotations();
    const taskOptions = await this.#taskOptions;
    const notStarted = (err: NotStarted): ContainerdError =>
      new ContainerdError(
        'unreachable',
        `containerd went away before container "${id}" started (the connection to ${this.#client.socket} was lost: ${err.lost.details}); run the build again`,
        err.lost.details,
        err.lost,
      );
    try {
      return await this.#runContainer(options, annotations, taskOptions);
    } catch (err) {
      if (!(err instanceof NotStarted)) throw err;
      // containerd went away (a restart) before the process started: nothing
      // of it ran, so it runs again, once, when containerd is back. Under
      // another name: containerd may keep the first one's half-made task
      // directory (a create it did not finish) and refuse the name again.
      const retryId = `${id}-again`;
      const back = retryId.length <= ID_MAX && (await this.#reachable(options.signal));
      options.signal?.throwIfAborted();
      if (!back) throw notStarted(err);
      await this.#leftovers.remove();
      this.#logger?.warn({ id, retryId, err: err.lost.details }, 'containerd went away before the container started; running it again');
      this.#renamed.set(id, retryId);
      try {
        return await this.#runContainer({ ...options, id: retryId }, annotations, taskOptions);
      } catch (retryErr) {
        throw retryErr instanceof NotStarted ? notStarted(retryErr) : retryErr;
      } finally {
        this.#renamed.delete(id);
      }
    }
  }

  /** Whether containerd answers, waiting for it as long as a call's deadline, or until `signal` aborts (false). */
  async #reachable(signal: AbortSignal | undefined): Promise<boolean> {
    const answered = this.#client.version({ wait: true }).then(
      () => true,
      () => false,
    );
    if (signal === undefined) return answered;
    if (signal.aborted) return false;
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<boolean>((resolve) => {
      onAbort = () => resolve(false);
      signal.addEventListener('abort', onAbort, { once: true });
    });
    try {
      return await Promise.race([answered, aborted]);
    } finally {
      if (onAbort !== undefined) signal.removeEventListener('abort', onAbort);
    }
  }

  /** One attempt of run(): makes container `id` (in the shim group, with `annotations`) and runs its task (with `taskOptions`). */
  async #runContainer(options: RunOptions, annotations: Readonly<Record<string, string>> | undefined, taskOptions: TaskOptions): Promise<ExitStatus> {
    const { id, root, mounts, process: proc } = options;
    this.#deletes.watch();
    const what = `cannot run container "${id}"`;
    const dir = await this.#dirs.take();
    const paths = [dir, ...hostPaths(root.mounts, mounts)];
    let created = false;
    let status: ExitStatus;
    try {
      if (root.mounts.length === 0) throw new KilnError(ERROR_CODES.INTERNAL, `${what}: its root has no mounts`);
      const made = await containerSpec({
        id,
        meta: proc.meta,
        ...rootOf(root),
        rootReadonly: root.readonly,
        mounts,
        ...(options.network === undefined ? {} : { network: options.network }),
        dir,
        host: this.#host,
        hostPaths: paths,
        // Without a group, each container has a shim of its own.
        ...(annotations === undefined ? {} : { annotations }),
      });
      const spec = proc.terminal === undefined ? made : onTerminal(made, proc.terminal.output);
      await this.#client
        .createContainer({ id, labels: { [OWNER_LABEL]: currentOwner() }, runtime: RUNTIME, specJson: ociJson(spec) })
        .catch((err: unknown) => {
          if (lostContainerd(err)) {
            // The container may have been made.
            created = true;
            throw new NotStarted(err);
          }
          throw failure(err) === 'already-exists'
            ? new KilnError(ERROR_CODES.EXECUTOR, `container "${id}" already exists in containerd namespace "${this.#client.namespace}"`, { cause: err })
            : wrap(what, err, paths);
        });
      created = true;
      status = await this.#supervise({ containerId: id }, dir, proc, {
        signal: options.signal,
        started: options.started,
        // No rootfs mounts: runc mounts the root inside the container's mount namespace (the spec's mounts), so the shim mounts and unmounts nothing.
        create: (io) => this.#client.createTask(id, [], io, taskOptions),
        // The root vanished with the container's mount namespace when its
        // process exited, and the output ends with the process: the run goes
        // on while containerd deletes the task (runc delete, the shim's
        // cleanup), which the container's removal waits for. A terminal's
        // output ends only when the shim closes it, on delete.
        delete: async () => {
          const deleted = this.#deletes.delete(id);
          if (proc.terminal === undefined) deleted.catch(() => {});
          else await deleted;
        },
        what,
        hostPaths: paths,
      });
    } catch (err) {
      await this.#cleanUp(id, dir, created, lostContainerd(err) || err instanceof NotStarted).catch((cleanupErr: unknown) => {
        this.#logger?.warn({ id, err: cleanupErr }, 'cannot remove a failed container');
      });
      throw err;
    }
    // The task is deleted: its rootfs unmounted, its output all read. What is
    // left (containerd's record of the container, our directory) goes while
    // the build goes on; close() waits for it.
    const cleanup = this.#cleanUp(id, dir, created, false).catch((err: unknown) => {
      this.#logger?.warn({ id, err }, 'cannot remove a finished container');
    });
    this.#cleanups.add(cleanup);
    void cleanup.finally(() => this.#cleanups.delete(cleanup));
    return status;
  }

  async exec(id: string, proc: ProcessSpec, options: ExecOptions = {}): Promise<ExitStatus> {
    checkId(id);
    if (proc.terminal !== undefined) throw new KilnError(ERROR_CODES.INTERNAL, `exec into container "${id}": a terminal is for run() only`);
    options.signal?.throwIfAborted();
    const ref = { containerId: this.#renamed.get(id) ?? id, execId: `exec-${randomBytes(6).toString('hex')}` };
    const what = `cannot exec into container "${id}"`;
    const dir = await this.#dirs.take();
    try {
      return await this.#supervise(ref, dir, proc, {
        signal: options.signal,
        started: undefined,
        create: (io) =>
          this.#client.exec(ref, ociJson(ociProcess(proc.meta, this.#host.capabilities)), io).catch((err: unknown) => {
            if (failure(err) === 'not-found') throw new KilnError(ERROR_CODES.EXECUTOR, `${what}: it is not running`, { cause: err });
            throw err;
          }),
        delete: () => this.#client.delete(ref),
        what,
        hostPaths: [dir],
      });
    } catch (err) {
      throw err instanceof NotStarted ? err.lost : err;
    } finally {
      // Only left when starting or waiting failed: an exec'd process that ran was deleted already.
      await this.#client.delete(ref).catch((err: unknown) => ignore(err, 'not-found', 'unreachable'));
      await rm(dir, { recursive: true, force: true });
    }
  }

  /**
   * Removes what dead kiln processes left: containers labelled with a dead
   * owner (their tasks killed and deleted first) and our directories named
   * after one. Containers of live processes, and containers without the
   * label (not kiln's), are never touched.
   */
  async recover(): Promise<void> {
    const dead = (await this.#client.listContainers()).filter((c) => {
      const owner = c.labels[OWNER_LABEL];
      return owner !== undefined && !isOwnerAlive(owner);
    });
    // Their tasks' runc may have been their process's sealed copy, gone with it.
    if (dead.length > 0) await this.#runc?.adoptDead(isOwnerAlive, await readdir(this.#stateDir));
    for (const c of dead) {
      const owner = c.labels[OWNER_LABEL];
      this.#logger?.info({ id: c.id, owner }, 'removing a container left by a dead kiln process');
      await destroyContainer(this.#client, c.id).catch((err: unknown) => {
        this.#logger?.warn({ id: c.id, err }, 'cannot remove a container left by a dead kiln process');
      });
    }
    await removeDeadDirs(this.#stateDir);
  }

  /**
   * Creates, starts and waits for one process, streaming its output; on
   * abort, SIGTERM then SIGKILL after the grace period, then rejects with
   * the reason. An exited process is deleted here, so that its output is
   * complete (the shim flushes it on delete) before this resolves.
   */
  async #supervise(ref: ProcessRef, dir: string, proc: ProcessSpec, control: ProcessControl): Promise<ExitStatus> {
    const fifos = openFifoIo(dir, proc, () => this.#client.closeStdin(ref));
    try {
      await control.create(fifos.io).catch((err: unknown) => {
        throw lostContainerd(err) ? new NotStarted(err) : wrap(control.what, err, control.hostPaths);
      });
      const { signal } = control;
      signal?.throwIfAborted();
      // Asked before Start, so an exit cannot come before the question, and
      // its answer is already on its way when the process ends.
      const exited = this.#client.wait(ref);
      // Settles with the process, whatever happens to the call.
      const settled = exited.then(() => undefined, () => undefined);
      await this.#client.start(ref).catch(async (err: unknown) => {
        // Whether the process started before containerd went away, its state tells, once containerd is back.
        if (lostContainerd(err) && ref.execId === undefined && (await this.#stillCreated(ref.containerId))) throw new NotStarted(err);
        throw wrap(control.what, err, control.hostPaths);
      });
      fifos.attach();
      const stopResizing = proc.terminal === undefined ? undefined : this.#followSize(ref, proc.terminal.output);
      const onAbort = (): void => {
        this.#stop(ref, settled).catch((err: unknown) => this.#logger?.warn({ err, ...ref }, 'cannot stop a cancelled container process'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      let code: number;
      try {
        if (signal?.aborted === true) onAbort();
        else control.started?.();
        code = await exited.catch((err: unknown) => {
          if (!lostContainerd(err)) throw wrap(control.what, err, control.hostPaths);
          const { details } = err;
          throw new ContainerdError(
            'unreachable',
            `containerd restarted while running container "${ref.containerId}" (the connection to ${this.#client.socket} was lost: ${details}); run the build again`,
            details,
            err,
          );
        });
      } finally {
        signal?.removeEventListener('abort', onAbort);
        stopResizing?.();
      }
      if (signal?.aborted === true) throw signal.reason;
      await control.delete().catch((err: unknown) => {
        throw wrap(control.what, err, control.hostPaths);
      });
      await fifos.drained();
      await Promise.all([flushed(proc.stdout), flushed(proc.stderr)]);
      return exitStatus(code);
    } finally {
      fifos.close();
    }
  }

  /**
   * Gives the process's pseudo-terminal the size of `output` now and after
   * each of its resizes, until the returned function is called. A resize
   * that fails (the process just exited) changes nothing.
   */
  #followSize(ref: ProcessRef, output: NonNullable<ProcessSpec['terminal']>['output']): () => void {
    const resize = (): void => {
      this.#client.resizePty(ref, terminalSize(output)).catch((err: unknown) => this.#logger?.debug({ err, ...ref }, 'cannot resize a pseudo-terminal'));
    };
    resize();
    output.on('resize', resize);
    return () => output.off('resize', resize);
  }

  /** Whether container `id`'s task is there and was never started; false when that cannot be told. */
  async #stillCreated(id: string): Promise<boolean> {
    return this.#client.getTask(id).then(
      (task) => task.status === 'CREATED',
      () => false,
    );
  }

  /** SIGTERM, then SIGKILL if the process is still there after the grace period. */
  async #stop(ref: ProcessRef, settled: Promise<void>): Promise<void> {
    const kill = (sig: number): Promise<void> => this.#client.kill(ref, sig).catch((err: unknown) => ignore(err, 'not-found', 'failed-precondition'));
    await kill(SIGNALS.SIGTERM);
    const timer = setTimeout(() => void kill(SIGNALS.SIGKILL), this.#killGraceMs);
    await settled;
    clearTimeout(timer);
  }

  /**
   * Removes container `id` (if `created`) and `dir`. When containerd went
   * away (`lost`), or goes away now, the container is remembered and
   * removed before the next run instead.
   */
  async #cleanUp(id: string, dir: string, created: boolean, lost: boolean): Promise<void> {
    const deleting = this.#deletes.take(id);
    if (created && !lost) {
      try {
        if ((await deleting) === true) await this.#client.deleteContainer(id).catch((err: unknown) => ignore(err, 'not-found'));
        else await destroyContainer(this.#client, id);
      } catch (err) {
        if (!lostContainerd(err)) throw err;
        lost = true;
      }
    }
    if (created && lost) {
      this.#leftovers.add(id, dir);
      return;
    }
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * The root of a container as the spec gives it: a lone bind is the root
 * directory itself; anything else runc mounts at the root, inside the
 * container's mount namespace, over the bundle's `rootfs` (which
 * containerd makes; a relative root path names it). Like the runc
 * executor: nothing of the root is mounted on the host, so nothing is left
 * mounted once the container's process has exited.
 */
function rootOf(root: RunOptions['root']): { rootPath: string; rootMounts: readonly Mount[] } {
  const [first] = root.mounts;
  if (root.mounts.length === 1 && first?.type === 'bind') return { rootPath: first.source, rootMounts: [] };
  return { rootPath: 'rootfs', rootMounts: root.mounts };
}

function checkId(id: string): void {
  if (id.length > ID_MAX || !ID_RE.test(id)) {
    throw new KilnError(
      ERROR_CODES.INTERNAL,
      `invalid container id "${id}": use up to ${ID_MAX} letters and digits, with single ".", "_" or "-" between them`,
    );
  }
}
