/**
 * The executor contract: run a process in a container over mounts. An
 * executor never sees cache refs or snapshots: ExecOp prepares the mounts and
 * hands over plain mount descriptions. runc and containerd implement it.
 */
import type { Readable, Writable } from 'node:stream';
import type { ReadStream, WriteStream } from 'node:tty';
import type { NetworkMode, SecurityMode } from '../llb/types.js';
import type { Mount } from '../snapshot/types.js';

/** The process's user, already resolved to numbers (names are looked up by ExecOp in the rootfs). */
export interface ProcessUser {
  readonly uid: number;
  readonly gid: number;
  readonly additionalGids: readonly number[];
}

/** Everything about the process and its sandbox (BuildKit's executor Meta). */
export interface ProcessMeta {
  /** args[0] is looked up in PATH by the runtime when not absolute. */
  readonly args: readonly string[];
  /** `KEY=VALUE`; ExecOp adds a default PATH when none is given. */
  readonly env: readonly string[];
  /** Absolute; the runtime creates it (0755, owned by root) when the rootfs lacks it. */
  readonly cwd: string;
  readonly user: ProcessUser;
  /** Empty: the executor picks one (e.g. the container id, shortened). */
  readonly hostname: string;
  /** Written to the container's /etc/hosts after the localhost lines. */
  readonly extraHosts: readonly { readonly host: string; readonly ip: string }[];
  readonly ulimits: readonly { readonly name: string; readonly soft: number; readonly hard: number }[];
  /** Cgroup path under which the container's cgroup is made; empty = the executor's default. */
  readonly cgroupParent: string;
  /**
   * host: the host's network namespace. sandbox and none: a new namespace
   * with loopback only, unless RunOptions.network gives one to join.
   */
  readonly network: NetworkMode;
  /** sandbox: default capabilities, no new privileges, masked paths; insecure: privileged. */
  readonly security: SecurityMode;
}

/** A mount inside the container: a Mount and where it goes (an absolute path inside the container). */
export type ContainerMount = Mount & { readonly destination: string };

/**
 * The container's root filesystem: `mounts` stacked at the rootfs (as
 * containerd passes them to a shim), presented read-only to the process when
 * `readonly`. The runtime itself mounts the root writable, to make its mount
 * points in it, and applies read-only after.
 */
export interface ContainerRoot {
  readonly mounts: readonly Mount[];
  readonly readonly: boolean;
}

/**
 * A terminal a process gets as its controlling TTY (an interactive shell):
 * the runtime makes a pseudo-terminal in the container, of the terminal's
 * size, following its resizes. What is typed goes to the process as bytes
 * (Ctrl-C included: the process's own terminal turns it into SIGINT).
 */
export interface ProcessTerminal {
  /** The terminal's input. Nothing else may read it while the process runs; it is left in cooked mode after. */
  readonly input: ReadStream & { readonly fd: number };
  /** The terminal's output; its size and `resize` events give the pseudo-terminal's. */
  readonly output: WriteStream & { readonly fd: number };
}

/** The process and its streams. */
export interface ProcessSpec {
  readonly meta: ProcessMeta;
  readonly stdin?: Readable;
  /** Output is streamed here as it comes. */
  readonly stdout: Writable;
  readonly stderr: Writable;
  /**
   * Run on this terminal instead: stdin, stdout and stderr are then the
   * terminal's (the streams above get nothing). For `run` only.
   */
  readonly terminal?: ProcessTerminal;
}

/**
 * A network namespace made for the container (see src/network/): the
 * container joins it instead of getting a new one, and gets its resolv.conf.
 */
export interface NetworkNamespaceRef {
  /** The nsfs file (a bind-mounted namespace) to join. */
  readonly namespacePath: string;
  /** Bound at the container's /etc/resolv.conf. */
  readonly resolvConfPath: string;
}

/** What `Executor.run` runs: one container. */
export interface RunOptions {
  /** The container's id; unique among the executor's running containers. */
  readonly id: string;
  readonly root: ContainerRoot;
  /** Mounted on top of the root, in order (parents before children). */
  readonly mounts: readonly ContainerMount[];
  readonly process: ProcessSpec;
  /** The namespace a sandboxed container joins; without one it gets loopback only (meta.network `host` ignores it). */
  readonly network?: NetworkNamespaceRef;
  /** Stops the container: SIGTERM, then SIGKILL after a grace period; run() then rejects with signal.reason. */
  readonly signal?: AbortSignal;
  /** Called once the process has started (e.g. to allow exec() into it). */
  readonly started?: () => void;
}

/** What `Executor.exec` takes besides the container and the process. */
export interface ExecOptions {
  /** Stops the exec'd process (not the container): SIGTERM, then SIGKILL; exec() then rejects with signal.reason. */
  readonly signal?: AbortSignal;
}

/**
 * What an executor mounts by itself and what it can mount, so that the
 * caller need not know the runtime.
 */
export interface MountSupport {
  /**
   * Where the executor mounts something of its own in every container's
   * root (/proc, /dev, /sys, /etc/hosts, ...). When the root lacks one, the
   * runtime creates a stub for it there, which is not the process's work.
   */
  readonly ownMountpoints: readonly string[];
  /**
   * Those of `ownMountpoints` whose stubs stay in the result, as BuildKit
   * leaves them (a `RUN true` on busybox gives a layer with `proc/` and
   * `sys/`): the mount points of the system filesystems, which every root
   * filesystem is expected to have. Default: none.
   */
  readonly keptMountpoints?: readonly string[];
  /**
   * The longest overlay options (comma-joined, as `renderMount` writes them)
   * the runtime mounts as they are; undefined: no limit. A longer overlay
   * must be mounted by the caller and passed as a bind.
   */
  readonly maxOverlayOptions?: number;
}

/** How a process ended. */
export interface ExitStatus {
  readonly exitCode: number;
  /** Set when the process was killed by a signal. */
  readonly signal?: string;
}

/** Whether sandboxed containers run under a seccomp filter, and if not, why. */
export type SeccompStatus = { readonly enabled: true; readonly profile: string } | { readonly enabled: false; readonly reason: string };

/** Runs processes in containers. */
export interface Executor {
  /** The executor's name, as `kiln workers` shows it (`runc`, `containerd`). */
  readonly name: string;
  /** Whether `security: sandbox` containers get a seccomp filter (`kiln workers` shows it); undefined: not known. */
  readonly seccomp?: SeccompStatus | undefined;
  /** What it mounts by itself and what it can mount. */
  readonly mountSupport: MountSupport;
  /**
   * Runs `process` in a new container `id` over `root`, with `mounts` on
   * top, in order. Resolves with the exit status whatever the code; rejects
   * only when the container could not be run or was cancelled. The container
   * and everything made for it are gone when this settles, on every path.
   */
  run(options: RunOptions): Promise<ExitStatus>;
  /**
   * A hint that `run` will be called soon: what the first container needs
   * once per process (the runc executor's sealed copy of runc) is made
   * meanwhile, instead of after the op's mounts and network are ready.
   * Never fails; `run` works without it.
   */
  prewarm?(): void;
  /** Runs another process in the running container `id` (for debugging sessions). */
  exec(id: string, process: ProcessSpec, options?: ExecOptions): Promise<ExitStatus>;
  /** Lets go of connections (a daemon's socket), so the process can exit. */
  close?(): Promise<void>;
  /**
   * Finishes a setup left for the first container (see deferred.ts), so
   * that `seccomp` is known; rejects with the reason the executor cannot
   * run anything.
   */
  ready?(): Promise<void>;
}
