/**
 * The runc executor. Each container is an OCI bundle in
 * STATE/bundles/OWNER-ID (config.json, hosts file, the rootfs mountpoint),
 * OWNER being the creating process's token, run by `runc run`; runc keeps
 * its own state in STATE/runc. Several kiln processes may share STATE: the
 * owner in the name lets a new executor clean what a crashed process left,
 * and only that. config.json holds the process's environment, secretEnv
 * values included, so kiln puts STATE on a tmpfs (see runtime-dir.ts).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, constants as fsConstants, type FSWatcher, mkdirSync, readFileSync, rmSync, watch, writeFileSync } from 'node:fs';
import { access, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { exec } from '../command.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import type { Logger } from '../log.js';
import { currentOwner, isOwnerAlive } from '../owner.js';
import { MAX_MOUNT_OPTIONS } from '../snapshot/mounting.js';
import type { Mount } from '../snapshot/types.js';
import { containerSpec, type HostFacts, hostFacts } from './container-spec.js';
import { type Child, spawnChild } from '../spawner.js';
import { sealRunc, type SealedRunc } from './sealed-runc.js';
import { OCI_OWN_MOUNTPOINTS, OCI_SYSTEM_MOUNTPOINTS, ociJson, ociProcess, onTerminal } from './oci-spec.js';
import { boundingCapabilities, exitStatus, flushed, hostPaths, runtimeError, sandboxSeccomp, type SandboxSeccomp } from './process-facts.js';
import type { ContainerRoot, ExecOptions, Executor, ExitStatus, MountSupport, ProcessSpec, RunOptions, SeccompStatus } from './types.js';

/** Options of `createRuncExecutor`. */
export interface RuncExecutorOptions {
  /** Where runc's state and the bundles live; every kiln process on a root uses the same one. On a tmpfs: bundles hold secrets. */
  readonly stateDir: string;
  /**
   * Where an older kiln kept them (under its root, on disk): what dead
   * processes left there is cleaned as in `stateDir`, then the directory
   * goes, so no bundle with a secret stays on the disk.
   */
  readonly formerStateDir?: string;
  /** The runc binary; default `runc` found in PATH. */
  readonly runcPath?: string;
  readonly logger?: Logger;
  /** How long a cancelled process has between SIGTERM and SIGKILL; default 10 s. */
  readonly killGraceMs?: number;
  /** The seccomp profile of sandboxed containers; default SECCOMP_PROFILE. Without the file they run without seccomp (logged). */
  readonly seccompProfile?: string;
}

/**
 * What the runc executor mounts by itself and what it can mount: runc mounts
 * a root overlay inside the container with one mount(2) call, passing its
 * options as they are: the kernel takes one page of them.
 */
export const RUNC_MOUNT_SUPPORT: MountSupport = { ownMountpoints: OCI_OWN_MOUNTPOINTS, keptMountpoints: OCI_SYSTEM_MOUNTPOINTS, maxOverlayOptions: MAX_MOUNT_OPTIONS };

/**
 * Creates the runc executor over `stateDir`, first cleaning the containers,
 * mounts and bundles that dead kiln processes left there. Fails with an
 * EXECUTOR error saying what to install when runc is missing.
 */
export async function createRuncExecutor(options: RuncExecutorOptions): Promise<Executor> {
  // The resident spawner is not started here: a build whose steps all come
  // from the cache starts no container, and perl's start would be all its
  // spawner did. The first child started through it (the network, the sealed
  // runc, runc) starts it, early in the first step that runs, when the heap
  // is not much bigger than now.
  const runc = await findRunc(options.runcPath);
  const stateDir = path.resolve(options.stateDir);
  const seccomp = await sandboxSeccomp(options.seccompProfile);
  if (!seccomp.status.enabled) options.logger?.warn({ reason: seccomp.status.reason }, 'sandboxed containers run without seccomp');
  const init = {
    runc,
    // Made when the first container starts, not here: a build whose steps
    // all come from the cache starts none, and the copy (a perl process
    // copying runc's ~10 MB into a memfd) cost every cached build a spawn.
    sealed: () => sealRunc(runc, options.logger),
    stateDir,
    capabilities: await boundingCapabilities(),
    seccomp,
    killGraceMs: options.killGraceMs ?? 10_000,
    logger: options.logger,
  };
  const executor = new RuncExecutor(init);
  await mkdir(path.join(stateDir, 'bundles'), { recursive: true, mode: 0o700 });
  await mkdir(path.join(stateDir, 'runc'), { recursive: true, mode: 0o700 });
  await executor.recover();
  if (options.formerStateDir !== undefined) {
    await retire(new RuncExecutor({ ...init, sealed: () => Promise.resolve(undefined), stateDir: path.resolve(options.formerStateDir) }), options.formerStateDir);
  }
  return executor;
}

/**
 * Cleans a former STATE like a current one, then removes it once no live
 * process has a bundle there (an older kiln still running keeps it).
 */
async function retire(former: RuncExecutor, dir: string): Promise<void> {
  if (!existsSync(path.join(dir, 'bundles')) || !existsSync(path.join(dir, 'runc'))) return;
  await former.recover();
  if ((await readdir(path.join(dir, 'bundles'))).length === 0) await rm(dir, { recursive: true, force: true });
}

/** The annotation naming the owner of a container, for containers whose bundle is gone. */
const OWNER_ANNOTATION = 'dev.kiln.owner';
/** A bundle's name: the owner token of the process that made it, then the container id. */
const BUNDLE_RE = /^(\d+-\d+)-(.+)$/;
/** How often the pid file runc writes once the container exists is looked for, when its directory cannot be watched. */
const POLL_MS = 10;
/** The same, as a fallback to the watch. */
const SLOW_POLL_MS = 100;
/** What runc accepts as a container id; a leading letter or digit also keeps `.` and `..` out. */
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$/;

interface RuncExecutorInit {
  readonly runc: string;
  /** Makes the sealed copy of `runc` to run instead (see sealed-runc.ts); called once, at the first container. */
  readonly sealed: () => Promise<SealedRunc | undefined>;
  readonly stateDir: string;
  /** What `security: insecure` grants: what this process (and so runc) holds. */
  readonly capabilities: readonly string[];
  readonly seccomp: SandboxSeccomp;
  readonly killGraceMs: number;
  readonly logger: Logger | undefined;
}

/** The files of one runc invocation. */
interface RuncFiles {
  readonly pid: string;
  readonly log: string;
}

/** How one runc invocation is controlled. */
interface RuncControl {
  readonly signal: AbortSignal | undefined;
  readonly started: (() => void) | undefined;
  /** Sends `sig` to the process runc started (host pid `pid`); never rejects. */
  readonly kill: (sig: 'SIGTERM' | 'SIGKILL', pid: number) => Promise<void>;
  /** What is being done, for error messages. */
  readonly what: string;
  /** The host paths the container uses, to name the one that is full if runc says so. */
  readonly hostPaths: readonly string[];
}

/** How much of runc's stderr is kept to explain a failure before the process started. */
const STDERR_TAIL = 4096;

class RuncExecutor implements Executor {
  readonly name = 'runc';
  readonly mountSupport: MountSupport = RUNC_MOUNT_SUPPORT;
  readonly seccomp: SeccompStatus;
  readonly #host: HostFacts;
  readonly #runc: string;
  /** What is spawned to run runc: its sealed copy once that is ready, its file until then. */
  #runcFile: string;
  readonly #seal: () => Promise<SealedRunc | undefined>;
  /** Begun by the first run(); undefined while no container has started. */
  #sealed: Promise<SealedRunc | undefined> | undefined;
  readonly #runcRoot: string;
  readonly #bundles: string;
  readonly #capabilities: readonly string[];
  readonly #killGraceMs: number;
  readonly #logger: Logger | undefined;

  constructor(init: RuncExecutorInit) {
    this.#runc = init.runc;
    this.#runcFile = init.runc;
    this.#seal = init.sealed;
    this.#runcRoot = path.join(init.stateDir, 'runc');
    this.#bundles = path.join(init.stateDir, 'bundles');
    this.#capabilities = init.capabilities;
    this.seccomp = init.seccomp.status;
    this.#host = hostFacts(init.capabilities, init.seccomp);
    this.#killGraceMs = init.killGraceMs;
    this.#logger = init.logger;
  }

  async run(options: RunOptions): Promise<ExitStatus> {
    const { id, root, mounts, process: proc } = options;
    checkId(id);
    options.signal?.throwIfAborted();
    // Awaited just before runc starts: the bundle is written meanwhile.
    const sealed = this.#startSeal();
    const bundle = this.#createBundle(id);
    const paths = [bundle, ...hostPaths(root.mounts, mounts)];
    try {
      const rootfs = this.#rootfs(bundle, root);
      const made = await containerSpec({
        id,
        meta: proc.meta,
        rootPath: rootfs.path,
        rootReadonly: rootfs.readonly,
        rootMounts: rootfs.mounts,
        mounts,
        ...(options.network === undefined ? {} : { network: options.network }),
        dir: bundle,
        host: this.#host,
        hostPaths: paths,
        annotations: { [OWNER_ANNOTATION]: currentOwner() },
      });
      const spec = proc.terminal === undefined ? made : onTerminal(made, proc.terminal.output);
      try {
        // Synchronous: a small file in a local directory, written on every exec op (see #createBundle).
        writeFileSync(path.join(bundle, 'config.json'), ociJson(spec));
      } catch (err) {
        throw runtimeError(`cannot write the bundle of container "${id}"`, (err as Error).message, { hostPaths: paths, cause: err });
      }
      const files = { pid: path.join(bundle, 'init.pid'), log: path.join(bundle, 'runc.log') };
      await sealed;
      return await this.#runRunc(['run', '--bundle', bundle, '--pid-file', files.pid, id], files, proc, {
        signal: options.signal,
        started: options.started,
        // The container's init gets the signals, so every process in its pid namespace ends with it.
        kill: async (sig) => {
          await this.#runcQuiet(['kill', id, sig]);
        },
        what: `cannot run container "${id}"`,
        hostPaths: paths,
      });
    } finally {
      await this.#destroy(id, bundle);
    }
  }

  prewarm(): void {
    void this.#startSeal();
  }

  /** Begins making the sealed copy of runc, once; resolves when runc is to be run from it (or from its file). */
  #startSeal(): Promise<SealedRunc | undefined> {
    this.#sealed ??= this.#seal().then((sealed) => {
      if (sealed !== undefined) this.#runcFile = sealed.path;
      return sealed;
    });
    return this.#sealed;
  }

  async exec(id: string, proc: ProcessSpec, options: ExecOptions = {}): Promise<ExitStatus> {
    checkId(id);
    if (proc.terminal !== undefined) throw new KilnError(ERROR_CODES.INTERNAL, `exec into container "${id}": a terminal is for run() only`);
    options.signal?.throwIfAborted();
    const base = path.join(this.#bundleOf(id), `exec-${randomBytes(6).toString('hex')}`);
    const files = { process: `${base}.json`, pid: `${base}.pid`, log: `${base}.log` };
    try {
      await writeFile(files.process, ociJson(ociProcess(proc.meta, this.#capabilities)), { flag: 'wx' });
    } catch (err) {
      throw new KilnError(ERROR_CODES.EXECUTOR, `cannot exec into container "${id}": it is not running`, { cause: err });
    }
    try {
      return await this.#runRunc(['exec', '--process', files.process, '--pid-file', files.pid, id], files, proc, {
        signal: options.signal,
        started: undefined,
        // runc kill would signal the container's init; only the exec'd process is ours to stop.
        kill: async (sig, pid) => {
          try {
            process.kill(pid, sig);
          } catch {
            // Already gone.
          }
        },
        what: `cannot exec into container "${id}"`,
        hostPaths: [base],
      });
    } finally {
      await Promise.all(Object.values(files).map((f) => rm(f, { force: true })));
    }
  }

  /**
   * Cleans STATE after dead kiln processes (like containerd's loading of
   * existing tasks at start): their bundles, the containers and rootfs mounts
   * of those bundles, and containers whose bundle is gone. Bundles of live
   * processes are never touched.
   */
  async recover(): Promise<void> {
    for (const name of await readdir(this.#bundles)) {
      const bundle = BUNDLE_RE.exec(name);
      // Not a name kiln gives, or a live process's: never touched.
      if (bundle === null || isOwnerAlive(name)) continue;
      const [, owner = '', id = ''] = bundle;
      this.#logger?.info({ id, owner }, 'cleaning a container left by a dead kiln process');
      await this.#destroy(id, path.join(this.#bundles, name), { rootfsMaybeMounted: true }).catch((err: unknown) => {
        this.#logger?.warn({ id, err }, 'cannot clean a container left by a dead kiln process');
      });
    }
    const bundles = new Set((await readdir(this.#bundles)).map((name) => BUNDLE_RE.exec(name)?.[2]));
    const orphans = (await readdir(this.#runcRoot)).filter((id) => !bundles.has(id));
    if (orphans.length === 0) return;
    const listed = await this.#runcQuiet(['list', '--format', 'json']);
    for (const c of parseList(listed.stdout)) {
      const owner = c.annotations?.[OWNER_ANNOTATION];
      if (!orphans.includes(c.id) || owner === undefined || isOwnerAlive(owner)) continue;
      this.#logger?.info({ id: c.id, owner }, 'deleting a container left by a dead kiln process');
      await this.#runcQuiet(['delete', '--force', c.id]);
    }
  }

  /** This process's bundle of container `id`. */
  #bundleOf(id: string): string {
    return path.join(this.#bundles, `${currentOwner()}-${id}`);
  }

  /**
   * Makes the bundle directory; its name says whose it is from the start.
   * The bundle's few files are made and removed with synchronous calls:
   * microseconds each, where a trip through libuv's thread pool takes a good
   * part of a millisecond, on every exec op.
   */
  #createBundle(id: string): string {
    const bundle = this.#bundleOf(id);
    try {
      mkdirSync(bundle);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new KilnError(ERROR_CODES.EXECUTOR, `container "${id}" already exists (${bundle})`, { cause: err });
      throw runtimeError(`cannot make the bundle of container "${id}"`, (err as Error).message, { hostPaths: [bundle], cause: err });
    }
    return bundle;
  }

  /**
   * The root filesystem. A single bind is a directory someone already
   * mounted (or a plain one) and is used in place. Other mounts are for
   * runc to make at BUNDLE/rootfs inside the container's own mount
   * namespace, as a containerd shim would make them: they never appear on
   * the host, and go away with the container whatever happens to kiln.
   */
  #rootfs(bundle: string, root: ContainerRoot): { path: string; readonly: boolean; mounts: readonly Mount[] } {
    const { mounts, readonly } = root;
    const [first] = mounts;
    if (first === undefined) throw new KilnError(ERROR_CODES.INTERNAL, `container root of ${bundle} has no mounts`);
    if (mounts.length === 1 && first.type === 'bind') return { path: first.source, readonly, mounts: [] };
    const rootfs = path.join(bundle, 'rootfs');
    mkdirSync(rootfs);
    return { path: rootfs, readonly, mounts };
  }

  /**
   * Removes container `id` and its bundle. kiln never mounts anything in a
   * bundle, but a bundle left by an older kiln may hold a mounted rootfs
   * (`rootfsMaybeMounted`): it is unmounted before anything is deleted, and
   * one that stays mounted stops the removal, since deleting through a
   * mount would destroy the snapshot under it.
   */
  async #destroy(id: string, bundle: string, { rootfsMaybeMounted = false } = {}): Promise<void> {
    // `runc run` removes its container when the process exits; runc's state
    // dir for the id only remains when that did not happen (cancel, a runc
    // failure). Checking it saves a runc process on every exec op.
    if (existsSync(path.join(this.#runcRoot, id))) {
      // --force kills a container that still runs; one that is gone is no error.
      const deleted = await this.#runcQuiet(['delete', '--force', id]);
      if (deleted.exitCode !== 0) this.#logger?.warn({ id, stderr: deleted.stderr }, 'runc delete failed');
    }
    const rootfs = path.join(bundle, 'rootfs');
    while (rootfsMaybeMounted && (await isMountpoint(rootfs))) {
      if ((await this.#command('umount', [rootfs])).exitCode === 0) continue;
      // Still busy: detach it, it goes away once its last user does.
      const lazy = await this.#command('umount', ['-l', rootfs]);
      if (lazy.exitCode !== 0) throw new KilnError(ERROR_CODES.EXECUTOR, `cannot unmount ${rootfs}: ${lazy.stderr.trim()}`);
    }
    rmSync(bundle, { recursive: true, force: true });
  }

  /**
   * Runs one runc command that starts a process (`run` or `exec`): streams
   * its output, reports when the process exists, stops it on abort, and
   * tells runc's own failures (logged at error level) from the process's
   * exit code, which runc passes through.
   */
  async #runRunc(args: readonly string[], files: RuncFiles, proc: ProcessSpec, control: RuncControl): Promise<ExitStatus> {
    // Through the resident spawner (spawner.ts), not node's spawn: this is
    // the one process of every exec op, and node's fork of itself costs
    // tens of milliseconds of main-thread time.
    // On a terminal, runc gets it as its own stdio: a foreground `runc run`
    // of a process with `terminal: true` makes the container's
    // pseudo-terminal itself, puts ours in raw mode, copies both ways,
    // follows SIGWINCH (the terminal sends it to its foreground process
    // group, which runc is in) and restores the mode when the process exits.
    // (The other way, a console socket, hands over the pseudo-terminal's
    // fd with SCM_RIGHTS, which node's sockets cannot receive.)
    const { terminal } = proc;
    const runcArgs = ['--root', this.#runcRoot, '--log', files.log, '--log-format', 'json', ...args];
    const child: Child =
      terminal === undefined
        ? spawnChild({ file: this.#runcFile, args: runcArgs, argv0: 'runc', stdin: proc.stdin === undefined ? 'ignore' : 'pipe', stdout: 'pipe', stderr: 'pipe' })
        : spawn(this.#runcFile, runcArgs, { argv0: 'runc', stdio: [terminal.input.fd, terminal.output.fd, terminal.output.fd] });
    // pipe() waits for the destination to drain; `end: false` leaves the
    // caller's streams open for whatever it writes after.
    child.stdout?.pipe(proc.stdout, { end: false });
    child.stderr?.pipe(proc.stderr, { end: false });
    // Before the process starts, what runc writes there is runc's own; kept in
    // case it fails without logging (its log unwritable, a crash).
    let stderrTail = '';
    const keepTail = (chunk: Buffer): void => {
      stderrTail = (stderrTail + chunk.toString('utf8')).slice(-STDERR_TAIL);
    };
    child.stderr?.on('data', keepTail);
    if (terminal === undefined && proc.stdin !== undefined && child.stdin !== null) {
      // The process may exit without reading all its input.
      child.stdin.on('error', () => {});
      proc.stdin.pipe(child.stdin);
    }
    // 'close': runc has exited and its output is all read.
    const result = new Promise<{ exitCode: number | undefined; failure: string | undefined }>((resolve) => {
      child.once('error', (err) => {
        resolve({ exitCode: undefined, failure: `cannot run ${this.#runc}: ${err.message}` });
      });
      child.once('close', (code, sig) => {
        resolve({ exitCode: code ?? undefined, failure: code === null ? `${this.#runc} was killed by ${sig ?? 'a signal'}` : undefined });
      });
    });
    const created = readPidFile(files.pid, result);
    const { signal } = control;
    const onAbort = (): void => {
      this.#stop(created, result, control.kill).catch((err: unknown) => this.#logger?.warn({ err }, 'cannot stop a cancelled container process'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      if (signal?.aborted === true) onAbort();
      const pid = await created;
      // From here on stderr is the process's: not runc's to explain, nor worth copying.
      child.stderr?.off('data', keepTail);
      if (pid !== undefined && signal?.aborted !== true) control.started?.();
      const r = await result;
      await Promise.all([flushed(proc.stdout), flushed(proc.stderr)]);
      if (signal?.aborted === true) throw signal.reason;
      const fail = (message: string): KilnError => runtimeError(control.what, message, { hostPaths: control.hostPaths });
      if (r.exitCode === undefined) throw fail(r.failure ?? `${this.#runc} did not exit normally`);
      if (r.exitCode !== 0) {
        // runc logs its own failures (create, mount, exec of the command) at
        // error level; the process's exit code it passes through unlogged.
        const error = await runcError(files.log);
        if (error !== undefined) throw fail(error);
        // No pid file: the container was never made, so no process of the
        // user's ran, and the code (often 255) is runc's, not the step's.
        if (pid === undefined) {
          const said = lastLine(stderrTail);
          throw fail(`${path.basename(this.#runc)} exited with code ${r.exitCode} before the container's process started${said === '' ? ' (it logged nothing)' : `: ${said}`}`);
        }
      }
      return exitStatus(r.exitCode);
    } finally {
      signal?.removeEventListener('abort', onAbort);
      if (terminal === undefined && proc.stdin !== undefined && child.stdin !== null) proc.stdin.unpipe(child.stdin);
    }
  }

  /** SIGTERM once the process exists, SIGKILL if it is still there after the grace period. */
  async #stop(created: Promise<number | undefined>, finished: Promise<unknown>, kill: RuncControl['kill']): Promise<void> {
    const pid = await created;
    // runc exited before making the process: nothing to stop.
    if (pid === undefined) return;
    await kill('SIGTERM', pid);
    const timer = setTimeout(() => void kill('SIGKILL', pid), this.#killGraceMs);
    await finished;
    clearTimeout(timer);
  }

  /** Runs runc with kiln's root; never rejects. */
  #runcQuiet(args: readonly string[]): Promise<{ exitCode: number | undefined; stdout: string; stderr: string }> {
    return this.#command(this.#runc, ['--root', this.#runcRoot, ...args]);
  }

  /** Lets go of the sealed copy of runc; no container may be started after. */
  async close(): Promise<void> {
    const sealed = await this.#sealed;
    this.#sealed = Promise.resolve(undefined);
    this.#runcFile = this.#runc;
    sealed?.close();
  }

  /** Runs a command to completion; never rejects. */
  async #command(file: string, args: readonly string[]): Promise<{ exitCode: number | undefined; stdout: string; stderr: string }> {
    const r = await exec({ file, args }, { stdout: true });
    return { exitCode: r.code ?? undefined, stdout: r.stdout, stderr: r.stderr };
  }
}

/** The runc binary: `explicit` if given, else the first `runc` in PATH that can be executed. */
export async function findRunc(explicit: string | undefined): Promise<string> {
  const candidates =
    explicit === undefined
      ? (process.env['PATH'] ?? '')
          .split(path.delimiter)
          .filter((dir) => dir !== '')
          .map((dir) => path.join(dir, 'runc'))
      : [explicit];
  for (const candidate of candidates) {
    try {
      await access(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // Try the next one.
    }
  }
  throw new KilnError(
    ERROR_CODES.EXECUTOR,
    explicit === undefined
      ? 'runc not found in PATH; install it (apt-get install runc)'
      : `runc not found at ${explicit}; install it (apt-get install runc) or give the right path`,
  );
}


function checkId(id: string): void {
  if (!ID_RE.test(id)) {
    throw new KilnError(
      ERROR_CODES.INTERNAL,
      `invalid container id "${id}": use up to 128 letters, digits, "_", ".", "+" or "-", starting with a letter or digit`,
    );
  }
}

/**
 * The pid runc writes once the process exists (atomically: it renames a
 * temp file into place), or undefined if runc exits first (`exited`
 * settles). The file's directory is watched (inotify), so the pid is read
 * once, when the rename happens: polling every few milliseconds cost each
 * starting container a stat and a read per poll, on the main thread, while
 * the other containers of a wide build were starting too. A slow poll stays
 * in case the watch cannot be made or misses the rename.
 */
function readPidFile(file: string, exited: Promise<unknown>): Promise<number | undefined> {
  return new Promise((resolve) => {
    let done = false;
    let watcher: FSWatcher | undefined;
    const finish = (pid: number | undefined): void => {
      if (done) return;
      done = true;
      watcher?.close();
      clearInterval(timer);
      resolve(pid);
    };
    const check = (last: boolean): void => {
      // Synchronous: a stat, then a read of a few bytes on a tmpfs.
      const text = existsSync(file) ? readTextSync(file) : '';
      if (text.trim() !== '') finish(Number(text));
      else if (last) finish(undefined);
    };
    const name = path.basename(file);
    try {
      watcher = watch(path.dirname(file), { persistent: false }, (_event, changed) => {
        if (changed === null || changed === name) check(false);
      });
      watcher.on('error', () => watcher?.close());
    } catch {
      watcher = undefined;
    }
    const timer = setInterval(() => check(false), watcher === undefined ? POLL_MS : SLOW_POLL_MS);
    // Looked at once more after runc exits: a short process may have come and gone unseen.
    void exited.then(() => check(true));
    check(false);
  });
}

function readTextSync(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** runc's own error messages from its JSON log, or undefined if it logged none. */
async function runcError(logFile: string): Promise<string | undefined> {
  const text = await readFile(logFile, 'utf8').catch(() => '');
  const messages: string[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    try {
      const entry = JSON.parse(line) as { level?: unknown; msg?: unknown };
      if (entry.level === 'error' && typeof entry.msg === 'string') messages.push(entry.msg);
    } catch {
      messages.push(line);
    }
  }
  return messages.length > 0 ? messages.join('; ') : undefined;
}


/** The last non-empty line of `text`, trimmed. */
function lastLine(text: string): string {
  return text.trim().split('\n').pop()?.trim() ?? '';
}

/** `runc list --format json` output (`null` when there are none). */
function parseList(stdout: string): { id: string; annotations?: Record<string, string> }[] {
  try {
    const parsed: unknown = JSON.parse(stdout);
    return Array.isArray(parsed) ? (parsed as { id: string; annotations?: Record<string, string> }[]) : [];
  } catch {
    return [];
  }
}

/** Whether `dir` is a mountpoint in this mount namespace. */
async function isMountpoint(dir: string): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').some((line) => {
    const field = line.split(' ')[4];
    // mountinfo escapes space, tab, newline and backslash as octal.
    return field?.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8))) === dir;
  });
}
