/**
 * The containerd executor: each run is a containerd container (metadata:
 * the OCI spec, an owner label) and its task (the process, run by the runc
 * shim over the rootfs mounts we pass). Streams go through FIFOs in a
 * directory of ours under STATE, named `OWNER-ID`. The owner label and the
 * directory names let a new executor clean what a crashed kiln process left
 * in the namespace, and only that.
 *
 * All containers of one executor share one shim process. The runc v2 shim
 * serves every container whose spec carries the same
 * `io.containerd.runc.v2.group` annotation (what Kubernetes does for a pod)
 * and exits when its last container is deleted; an anchor container, whose
 * task is created but never started, keeps it alive between runs. Starting
 * a shim costs more than a third of a short container's run. The anchor is
 * made before any other task, so that one task alone starts the shim.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ERROR_CODES, KilnError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { currentOwner, isOwnerAlive } from '../../owner.js';
import { MAX_MOUNT_OPTIONS } from '../../snapshot/mounting.js';
import { buildOciSpec, hostsFile, OCI_OWN_MOUNTPOINTS, ociJson, ociProcess, plainProcessMeta, renderMount } from '../oci-spec.js';
import type { ExecOptions, Executor, ExitStatus, MountSupport, ProcessSpec, RunOptions, SeccompStatus } from '../types.js';
import { ContainerdError, connectContainerd, type ContainerdClient, type ContainerdFailure, type ProcessIo, type ProcessRef } from './client.js';
import { makeFifos, openFifoIo } from './fifo-io.js';
import { boundingCapabilities, exitStatus, flushed, hostPaths, hostSpecOptions, runtimeError, sandboxSeccomp, type SandboxSeccomp } from '../process-facts.js';

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
  /** The seccomp profile of sandboxed containers; default SECCOMP_PROFILE. Without the file they run without seccomp (logged). */
  readonly seccompProfile?: string;
}

/** The label naming the kiln process (`currentOwner()`) that made a container. */
const OWNER_LABEL = 'dev.kiln.owner';
/** The runtime containerd starts the task with: the runc v2 shim. */
export const RUNTIME = 'io.containerd.runc.v2';
/** containerd's rule for identifiers; it also keeps `/` and `..` out of our directory names. */
const ID_RE = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;
const ID_MAX = 76;
const SIGNALS = os.constants.signals;
/** The annotation by which the runc v2 shim groups containers into one shim process. */
export const SHIM_GROUP_ANNOTATION = 'io.containerd.runc.v2.group';
/** The anchor's process: an empty executable file, looked up by runc but never run (the task is never started). */
const ANCHOR_PROCESS = '/anchor';
/**
 * How many process directories (with their FIFOs) are made at once. Making
 * FIFOs takes a process, and spawning one costs the event loop ~3 ms, paid
 * once per batch instead of once per run.
 */
const PROCESS_DIR_BATCH = 8;
/** How long the task-delete event stream stays open with no run going on (the next step of a build starts within milliseconds). */
const EVENTS_IDLE_MS = 200;

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
    const executor = new ContainerdExecutor({
      client,
      stateDir,
      capabilities: await boundingCapabilities(),
      seccomp,
      killGraceMs: options.killGraceMs ?? 10_000,
      logger: options.logger,
    });
    await executor.recover();
    if (options.formerStateDir !== undefined) await removeDeadDirs(options.formerStateDir, { thenEmpty: true });
    return executor;
  } catch (err) {
    client.close();
    throw err;
  }
}

interface ContainerdExecutorInit {
  readonly client: ContainerdClient;
  readonly stateDir: string;
  /** What `security: insecure` grants: what this process holds (containerd's shim is assumed to hold as much). */
  readonly capabilities: readonly string[];
  readonly seccomp: SandboxSeccomp;
  readonly killGraceMs: number;
  readonly logger: Logger | undefined;
}

/** How one process is started and supervised. */
interface ProcessControl {
  readonly signal: AbortSignal | undefined;
  readonly started: (() => void) | undefined;
  /** Creates the process (a task, or an exec'd process) over the FIFOs, without starting it. */
  readonly create: (io: ProcessIo) => Promise<void>;
  /** Deletes the exited process; resolves once its streams are closed (and a task's rootfs unmounted). */
  readonly delete: () => Promise<void>;
  /** What is being done, for error messages. */
  readonly what: string;
  /** The host paths the process uses, to name the one that is full if containerd says so. */
  readonly hostPaths: readonly string[];
}

class ContainerdExecutor implements Executor {
  readonly name = 'containerd';
  /**
   * The shim mounts a root overlay with one mount(2) call; it shortens
   * longer options by their common path prefix, but how far that goes
   * depends on the paths, so kiln keeps to what one call takes.
   */
  readonly mountSupport: MountSupport = { ownMountpoints: OCI_OWN_MOUNTPOINTS, maxOverlayOptions: MAX_MOUNT_OPTIONS };
  readonly seccomp: SeccompStatus;
  readonly #seccompFilter: SandboxSeccomp['filter'];
  readonly #client: ContainerdClient;
  readonly #stateDir: string;
  readonly #capabilities: readonly string[];
  readonly #killGraceMs: number;
  readonly #logger: Logger | undefined;
  /**
   * Containers of ours that could not be removed because containerd went
   * away (id -> our directory); removed before the next run, once it is back.
   */
  readonly #pending = new Map<string, string>();
  /** This executor's shim group. */
  readonly #group = `kiln-${currentOwner()}-${randomBytes(4).toString('hex')}`;
  /** The anchor container, once asked for: its id, or undefined if it could not be made. */
  #anchor: Promise<string | undefined> | undefined;
  /** Directories (with FIFOs) made ahead for the next processes. */
  readonly #spareDirs: string[] = [];
  /** The batch of directories being made, if any. */
  #refill: Promise<void> | undefined;
  /** Cleanups of finished runs, going on while the build goes on. */
  readonly #cleanups = new Set<Promise<void>>();
  /** Stops the stream of the shim's task-delete announcements; undefined while there is none (the next run opens one). */
  #unwatchDeletes: (() => void) | undefined;
  /** Runs waiting for the announcement of their task's delete: container id -> go on. */
  readonly #awaitingDelete = new Map<string, () => void>();
  /** containerd's task deletes that runs went on without: container id -> whether the call succeeded. */
  readonly #deleting = new Map<string, Promise<boolean>>();
  /** Runs retried under another container id: the run's id -> the container's. */
  readonly #renamed = new Map<string, string>();
  /** How many runs are going on. */
  #running = 0;
  /** Closes the event stream once no run has needed it for a while. */
  #idleTimer: NodeJS.Timeout | undefined;

  async close(): Promise<void> {
    await Promise.all(this.#cleanups);
    this.#unwatch();
    await this.#refill?.catch(() => {});
    await Promise.all(this.#spareDirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
    const anchor = await this.#anchor;
    // Its shim exits with it, once the last container is gone.
    if (anchor !== undefined) {
      await this.#destroy(anchor).catch((err: unknown) => this.#logger?.warn({ id: anchor, err }, 'cannot remove the anchor container'));
      await rm(path.join(this.#stateDir, `${currentOwner()}-${anchor}`), { recursive: true, force: true });
    }
    this.#client.close();
  }

  constructor(init: ContainerdExecutorInit) {
    this.#client = init.client;
    this.#stateDir = init.stateDir;
    this.#capabilities = init.capabilities;
    this.seccomp = init.seccomp.status;
    this.#seccompFilter = init.seccomp.filter;
    this.#killGraceMs = init.killGraceMs;
    this.#logger = init.logger;
  }

  async run(options: RunOptions): Promise<ExitStatus> {
    checkId(options.id);
    options.signal?.throwIfAborted();
    this.#running++;
    try {
      return await this.#runRetrying(options);
    } finally {
      if (--this.#running === 0) this.#unwatchWhenIdle();
    }
  }

  /** run(), which runs the container again once if containerd went away before it started. */
  async #runRetrying(options: RunOptions): Promise<ExitStatus> {
    const { id } = options;
    await this.#removePending();
    // The first run makes the first batch of process directories while the anchor is made.
    if (this.#spareDirs.length === 0) this.#refillDirs().catch(() => {});
    // The anchor starts the group's shim, alone and before any other task:
    // two tasks of a group with no shim yet both start one, and the shim's
    // `start` races on the group's socket (one removes the socket the other
    // is still setting up), failing a task.
    const anchor = await (this.#anchor ??= this.#createAnchor());
    const notStarted = (err: NotStarted): ContainerdError =>
      new ContainerdError(
        'unreachable',
        `containerd went away before container "${id}" started (the connection to ${this.#client.socket} was lost: ${err.lost.details}); run the build again`,
        err.lost.details,
        err.lost,
      );
    try {
      return await this.#runContainer(options, anchor);
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
      await this.#removePending();
      this.#logger?.warn({ id, retryId, err: err.lost.details }, 'containerd went away before the container started; running it again');
      this.#renamed.set(id, retryId);
      try {
        return await this.#runContainer({ ...options, id: retryId }, anchor);
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

  /** One attempt of run(): makes container `id` and runs its task. */
  async #runContainer(options: RunOptions, anchor: string | undefined): Promise<ExitStatus> {
    const { id, root, mounts, process: proc } = options;
    this.#watchDeletes();
    const what = `cannot run container "${id}"`;
    const dir = await this.#processDir();
    const paths = [dir, ...hostPaths(root.mounts, mounts)];
    let created = false;
    let status: ExitStatus;
    try {
      if (root.mounts.length === 0) throw new KilnError(ERROR_CODES.INTERNAL, `${what}: its root has no mounts`);
      const hostsPath = path.join(dir, 'hosts');
      const spec = buildOciSpec({
        id,
        meta: proc.meta,
        // The shim mounts `root` at the bundle's `rootfs`, which a relative root path names.
        rootPath: 'rootfs',
        rootReadonly: root.readonly,
        mounts,
        hostsPath,
        ...(await hostSpecOptions(this.#capabilities, this.#seccompFilter, proc.meta)),
        // Without an anchor, each container has a shim of its own.
        ...(anchor === undefined ? {} : { annotations: { [SHIM_GROUP_ANNOTATION]: this.#group } }),
      });
      // Synchronous: a small file in our own directory, on every exec op.
      writeFileSync(hostsPath, hostsFile(spec.hostname, proc.meta.extraHosts));
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
        create: (io) => this.#client.createTask(id, root.mounts.map((m) => renderMount(m.type === 'bind' ? { ...m, readonly: false } : m)), io),
        delete: () => this.#deleteTask(id),
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

  /**
   * Opens the stream of the shim's task-delete announcements, unless one is
   * open; one that ends (containerd went away) is opened again by the next run.
   */
  #watchDeletes(): void {
    clearTimeout(this.#idleTimer);
    if (this.#unwatchDeletes !== undefined) return;
    const unwatch = this.#client.watchTaskDeletes(
      (containerId) => this.#awaitingDelete.get(containerId)?.(),
      () => {
        if (this.#unwatchDeletes === unwatch) this.#unwatchDeletes = undefined;
      },
    );
    this.#unwatchDeletes = unwatch;
  }

  /**
   * Closes the event stream soon after the last run ends, unless a run
   * starts first (as the next step of a build does): an open stream keeps
   * node's event loop alive, so a program that never called close() would
   * never exit.
   */
  #unwatchWhenIdle(): void {
    clearTimeout(this.#idleTimer);
    this.#idleTimer = setTimeout(() => this.#unwatch(), EVENTS_IDLE_MS).unref();
  }

  #unwatch(): void {
    clearTimeout(this.#idleTimer);
    this.#unwatchDeletes?.();
    this.#unwatchDeletes = undefined;
  }

  async exec(id: string, proc: ProcessSpec, options: ExecOptions = {}): Promise<ExitStatus> {
    checkId(id);
    options.signal?.throwIfAborted();
    const ref = { containerId: this.#renamed.get(id) ?? id, execId: `exec-${randomBytes(6).toString('hex')}` };
    const what = `cannot exec into container "${id}"`;
    const dir = await this.#processDir();
    try {
      return await this.#supervise(ref, dir, proc, {
        signal: options.signal,
        started: undefined,
        create: (io) =>
          this.#client.exec(ref, ociJson(ociProcess(proc.meta, this.#capabilities)), io).catch((err: unknown) => {
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
    for (const c of await this.#client.listContainers()) {
      const owner = c.labels[OWNER_LABEL];
      if (owner === undefined || isOwnerAlive(owner)) continue;
      this.#logger?.info({ id: c.id, owner }, 'removing a container left by a dead kiln process');
      await this.#destroy(c.id).catch((err: unknown) => {
        this.#logger?.warn({ id: c.id, err }, 'cannot remove a container left by a dead kiln process');
      });
    }
    await removeDeadDirs(this.#stateDir);
  }

  /**
   * The container that keeps the group's shim alive: its task is created
   * (runc's init waits to be started, holding nothing but a few namespaces)
   * and never started; close() deletes it. Its root is a directory of ours
   * with one empty executable file for runc to find. Without it (it failed,
   * logged) every container is in a group of its own, with its own shim.
   */
  async #createAnchor(): Promise<string | undefined> {
    const id = `kiln-anchor-${randomBytes(6).toString('hex')}`;
    const dir = path.join(this.#stateDir, `${currentOwner()}-${id}`);
    try {
      await this.#makeDir(path.basename(dir));
      const rootfs = path.join(dir, 'rootfs');
      await mkdir(rootfs);
      await writeFile(path.join(rootfs, ANCHOR_PROCESS), '', { mode: 0o755 });
      const hostsPath = path.join(dir, 'hosts');
      await writeFile(hostsPath, '');
      const spec = buildOciSpec({
        id,
        meta: plainProcessMeta([ANCHOR_PROCESS]),
        rootPath: 'rootfs',
        mounts: [],
        hostsPath,
        allCapabilities: this.#capabilities,
        annotations: { [SHIM_GROUP_ANNOTATION]: this.#group },
      });
      await this.#client.createContainer({ id, labels: { [OWNER_LABEL]: currentOwner() }, runtime: RUNTIME, specJson: ociJson(spec) });
      await this.#client.createTask(id, [renderMount({ type: 'bind', source: rootfs, readonly: false })], { stdin: '', stdout: '', stderr: '' });
      return id;
    } catch (err) {
      this.#logger?.warn({ id, err }, 'cannot make the anchor container; each container starts a shim of its own');
      await this.#destroy(id).catch(() => {});
      await rm(dir, { recursive: true, force: true });
      return undefined;
    }
  }

  /**
   * A fresh directory of ours for one process (hosts file, FIFOs), taken
   * from those made ahead; the next batch is started while half of this
   * one is left, so runs rarely wait for one.
   */
  async #processDir(): Promise<string> {
    for (;;) {
      const dir = this.#spareDirs.pop();
      if (dir !== undefined) {
        // A failure is reported to the run that finds no directory left.
        if (this.#spareDirs.length < PROCESS_DIR_BATCH / 2) this.#refillDirs().catch(() => {});
        return dir;
      }
      await this.#refillDirs();
    }
  }

  /** Makes a batch of process directories, unless one is being made; resolves when it is in #spareDirs. */
  #refillDirs(): Promise<void> {
    this.#refill ??= this.#makeProcessDirs(PROCESS_DIR_BATCH)
      .then((dirs) => void this.#spareDirs.push(...dirs))
      .finally(() => (this.#refill = undefined));
    return this.#refill;
  }

  async #makeProcessDirs(count: number): Promise<string[]> {
    const dirs: string[] = [];
    try {
      for (let i = 0; i < count; i++) dirs.push(await this.#makeDir(`${currentOwner()}-${randomBytes(6).toString('hex')}`));
      await makeFifos(dirs);
    } catch (err) {
      await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
      throw err;
    }
    return dirs;
  }

  /** Makes our directory `name` under STATE; it must not exist (ids are unique among running containers). */
  async #makeDir(name: string): Promise<string> {
    const dir = path.join(this.#stateDir, name);
    try {
      await mkdir(dir);
    } catch (err) {
      throw runtimeError(`cannot make ${dir} for a container`, (err as Error).message, { hostPaths: [dir], cause: err });
    }
    return dir;
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
   * Deletes container `id`'s exited task; resolves once the shim has
   * deleted it (runc's container gone, the rootfs unmounted, the streams
   * closed), which the shim announces about half-way through containerd's
   * call. containerd then runs the shim's cleanup command (and runc's) for
   * the task, as it does whenever a shim connection closes, and answers
   * after it: ~15 ms per run, on nothing of ours. The container's cleanup
   * waits for that answer. Without the announcement (no event stream, or
   * containerd's call failed first), this is containerd's call.
   */
  async #deleteTask(id: string): Promise<void> {
    const announced = new Promise<void>((resolve) => {
      if (this.#unwatchDeletes !== undefined) this.#awaitingDelete.set(id, resolve);
    });
    const deleted = this.#client.delete({ containerId: id });
    this.#deleting.set(id, deleted.then(() => true, () => false));
    try {
      await Promise.race([deleted, announced]);
    } finally {
      this.#awaitingDelete.delete(id);
    }
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
    const deleting = this.#deleting.get(id);
    this.#deleting.delete(id);
    if (created && !lost) {
      try {
        if ((await deleting) === true) await this.#client.deleteContainer(id).catch((err: unknown) => ignore(err, 'not-found'));
        else await this.#destroy(id);
      } catch (err) {
        if (!lostContainerd(err)) throw err;
        lost = true;
      }
    }
    if (created && lost) {
      this.#logger?.warn({ id }, 'containerd is gone; the container will be removed before the next run');
      this.#pending.set(id, dir);
      return;
    }
    await rm(dir, { recursive: true, force: true });
  }

  /** Removes the containers a lost containerd kept us from removing; those it still cannot wait. */
  async #removePending(): Promise<void> {
    for (const [id, dir] of this.#pending) {
      try {
        await this.#destroy(id);
        await rm(dir, { recursive: true, force: true });
        this.#pending.delete(id);
      } catch (err) {
        this.#logger?.warn({ id, err }, 'cannot remove a container left when containerd went away');
      }
    }
  }

  /** Kills and deletes container `id`'s task, if any, then deletes the container; what is gone already is no error. */
  async #destroy(id: string): Promise<void> {
    const ref = { containerId: id };
    const task = await this.#client.getTask(id).catch((err: unknown) => ignore(err, 'not-found'));
    if (task !== undefined) {
      // A created task (the anchor's) is killed first too: deleting one whose
      // runc init still waits makes runc poll for its end, ~120 ms against
      // ~45 ms for kill, wait and delete.
      if (task.status !== 'STOPPED') {
        await this.#client.kill(ref, SIGNALS.SIGKILL, true).catch((err: unknown) => ignore(err, 'not-found', 'failed-precondition'));
        await this.#client.wait(ref);
      }
      await this.#client.delete(ref).catch((err: unknown) => ignore(err, 'not-found'));
    }
    await this.#client.deleteContainer(id).catch((err: unknown) => ignore(err, 'not-found'));
  }
}

/**
 * Removes the directories in `stateDir` named after dead kiln processes;
 * with `thenEmpty`, `stateDir` too once nothing is left in it. A missing
 * `stateDir` is fine.
 */
async function removeDeadDirs(stateDir: string, { thenEmpty = false } = {}): Promise<void> {
  const names = await readdir(stateDir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (names === undefined) return;
  for (const name of names) {
    if (!isOwnerAlive(name)) await rm(path.join(stateDir, name), { recursive: true, force: true });
  }
  if (thenEmpty && (await readdir(stateDir)).length === 0) await rm(stateDir, { recursive: true, force: true });
}

/** containerd went away before a process started: `lost` is the call's `unreachable` error. */
class NotStarted extends Error {
  readonly lost: ContainerdError;
  constructor(lost: ContainerdError) {
    super(lost.message, { cause: lost });
    this.lost = lost;
  }
}

/** Whether `err` is a call that failed because containerd went away. */
function lostContainerd(err: unknown): err is ContainerdError {
  return failure(err) === 'unreachable';
}

/** The kind of a containerd failure, or undefined for other errors. */
function failure(err: unknown): ContainerdFailure | undefined {
  return err instanceof ContainerdError ? err.failure : undefined;
}

/** Swallows `err` if it is a containerd failure of one of `kinds`; rethrows anything else. */
function ignore(err: unknown, ...kinds: ContainerdFailure[]): undefined {
  const kind = failure(err);
  if (kind !== undefined && kinds.includes(kind)) return undefined;
  throw err;
}

/** `err` with what was being done in front: containerd's message alone rarely says (nor which disk is full, among `paths`). */
function wrap(what: string, err: unknown, paths: readonly string[]): unknown {
  if (!(err instanceof ContainerdError) || err.failure === 'unreachable') return err;
  return runtimeError(what, err.details, { hostPaths: paths, cause: err });
}

function checkId(id: string): void {
  if (id.length > ID_MAX || !ID_RE.test(id)) {
    throw new KilnError(
      ERROR_CODES.INTERNAL,
      `invalid container id "${id}": use up to ${ID_MAX} letters and digits, with single ".", "_" or "-" between them`,
    );
  }
}


