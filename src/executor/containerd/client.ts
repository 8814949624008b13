/**
 * A small typed client of containerd's gRPC API over its unix socket: the
 * version, containers, tasks and events services, as far as kiln uses them.
 * Every call names kiln's containerd namespace and has a deadline, except
 * waiting for a process (as long as the process) and the event stream (as
 * long as its watcher, filtered to the namespace); failures become
 * ContainerdErrors that say which daemon and call failed.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ERROR_CODES, KilnError } from '../../errors.js';

/** Options of `connectContainerd`. */
export interface ContainerdClientOptions {
  /** The socket: `unix:///run/containerd/containerd.sock`, `unix:PATH` or a plain path. */
  readonly address: string;
  /** The containerd namespace every call works in; default `kiln`. */
  readonly namespace?: string;
  /** Deadline of each call but `wait`; default 30 s (creating a task starts a shim). */
  readonly timeoutMs?: number;
}

/** What went wrong in a call, from the gRPC status, for callers that react to some of them. */
export type ContainerdFailure = 'not-found' | 'already-exists' | 'failed-precondition' | 'unreachable' | 'other';

/** A failed containerd call. */
export class ContainerdError extends KilnError {
  readonly failure: ContainerdFailure;
  /** containerd's own message, without kiln's prefix. */
  readonly details: string;
  constructor(failure: ContainerdFailure, message: string, details: string, cause: unknown) {
    super(ERROR_CODES.EXECUTOR, message, { cause });
    this.name = 'ContainerdError';
    this.failure = failure;
    this.details = details;
  }
}

/** A mount the shim makes at the task's rootfs. */
export interface TaskMount {
  readonly type: string;
  readonly source: string;
  readonly options: readonly string[];
}

/** What the runc v2 shim is told about one task, beyond its spec. */
export interface TaskOptions {
  /** The runc binary the shim runs for this task (every runc call of it: create, start, exec, kill, delete); default `runc` from its PATH. */
  readonly runcBinary?: string;
}

/** A container record (metadata only; its process is a task). */
export interface ContainerRecord {
  readonly id: string;
  readonly labels: Readonly<Record<string, string>>;
}

/** The state of a task or of a process exec'd into one. */
export type ProcessStatus = 'UNKNOWN' | 'CREATED' | 'RUNNING' | 'STOPPED' | 'PAUSED' | 'PAUSING';

/** A task (a container's init process) as containerd reports it. */
export interface TaskState {
  readonly containerId: string;
  readonly pid: number;
  readonly status: ProcessStatus;
}

/** FIFO paths of a process's streams; an empty string is no stream. */
export interface ProcessIo {
  readonly stdin: string;
  readonly stdout: string;
  readonly stderr: string;
  /** The process runs on a pseudo-terminal the shim makes, copied through stdin and stdout (stderr is then empty). */
  readonly terminal?: boolean;
}

/** A process: a container's task (no execId) or a process exec'd into it. */
export interface ProcessRef {
  readonly containerId: string;
  readonly execId?: string;
}

/**
 * What the executor asks of containerd: the calls of ContainerdClient, as an
 * interface, so the executor's logic (retries, restarts, cleanup) can be
 * tested against a scripted fake. Failures are ContainerdErrors.
 */
export interface ContainerdApi {
  /** The daemon's socket path, for messages. */
  readonly socket: string;
  readonly namespace: string;
  version(options?: { wait?: boolean }): Promise<{ version: string; revision: string }>;
  createContainer(options: { id: string; labels: Readonly<Record<string, string>>; runtime: string; specJson: string }): Promise<void>;
  listContainers(): Promise<ContainerRecord[]>;
  deleteContainer(id: string): Promise<void>;
  createTask(containerId: string, rootfs: readonly TaskMount[], io: ProcessIo, options?: TaskOptions): Promise<void>;
  exec(ref: Required<ProcessRef>, processJson: string, io: ProcessIo): Promise<void>;
  start(ref: ProcessRef): Promise<void>;
  closeStdin(ref: ProcessRef): Promise<void>;
  wait(ref: ProcessRef): Promise<number>;
  kill(ref: ProcessRef, signal: number, all?: boolean): Promise<void>;
  /** Sets the size of the pseudo-terminal of a process run with `terminal`. */
  resizePty(ref: ProcessRef, size: { readonly columns: number; readonly rows: number }): Promise<void>;
  getTask(containerId: string): Promise<TaskState>;
  delete(ref: ProcessRef): Promise<void>;
  watchTaskDeletes(onDelete: (containerId: string) => void, onEnd: () => void): () => void;
  close(): void;
}

/** The type URLs containerd gives the OCI runtime-spec documents it takes as JSON. */
const SPEC_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/Spec';
const PROCESS_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/Process';
/** The type of the runc v2 shim's options (its protobuf message's full name, which containerd resolves such a URL by). */
const RUNC_OPTIONS_TYPE_URL = 'containerd.runc.v1.Options';
/** `binary_name`'s field number in containerd.runc.v1.Options. */
const RUNC_OPTIONS_BINARY_NAME = 6;

const PROTO_FILES = ['version.proto', 'containers.proto', 'tasks.proto', 'events.proto'];

/**
 * The .proto files: next to this module when it runs from src/ (type
 * stripping), else in the source tree, since tsc does not copy them to
 * dist/ (dist/src/executor/containerd -> src/executor/containerd/proto;
 * from the bundled CLI, dist/kiln.cjs -> src/executor/containerd/proto).
 */
function protoDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const candidates = [
    path.join(here, 'proto'),
    path.resolve(here, '../../../../src/executor/containerd/proto'),
    path.resolve(here, '../src/executor/containerd/proto'),
  ];
  const found = candidates.find((dir) => existsSync(path.join(dir, 'tasks.proto')));
  if (found === undefined) {
    throw new KilnError(ERROR_CODES.INTERNAL, `containerd API definitions not found (looked in ${candidates.join(', ')})`);
  }
  return found;
}

/** A unary call in grpc-js's callback style, as loaded from the .proto files. */
type UnaryMethod = (
  request: object,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: (err: grpc.ServiceError | null, response?: unknown) => void,
) => grpc.ClientUnaryCall;

/** A server-streaming call in grpc-js's style. */
type StreamMethod = (request: object, metadata: grpc.Metadata, options?: grpc.CallOptions) => grpc.ClientReadableStream<unknown>;

type ServiceClient = grpc.Client & Record<string, UnaryMethod | undefined>;
type ServiceName = 'version' | 'containers' | 'tasks' | 'events';
type ServiceConstructor = new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => ServiceClient;

let services: Promise<Record<ServiceName, ServiceConstructor>> | undefined;

/** The service constructors, loaded once per process. */
function loadServices(): Promise<Record<ServiceName, ServiceConstructor>> {
  services ??= (async () => {
    const dir = protoDir();
    const definition = await protoLoader.load(
      PROTO_FILES.map((f) => path.join(dir, f)),
      { keepCase: true, longs: Number, enums: String, defaults: true, includeDirs: [dir] },
    );
    const pkg = grpc.loadPackageDefinition(definition);
    const service = (name: string): ServiceConstructor => {
      let node: unknown = pkg;
      for (const part of name.split('.')) node = (node as Record<string, unknown>)[part];
      return node as ServiceConstructor;
    };
    return {
      version: service('containerd.services.version.v1.Version'),
      containers: service('containerd.services.containers.v1.Containers'),
      tasks: service('containerd.services.tasks.v1.Tasks'),
      events: service('containerd.services.events.v1.Events'),
    };
  })();
  return services;
}

/**
 * containerd.runc.v1.Options with only `binary_name` set, in protobuf's
 * wire format: the field's key (number, wire type 2), the length as a
 * varint, the bytes. One string field does not call for a schema.
 */
export function runcOptions(binaryName: string): Buffer {
  const bytes = Buffer.from(binaryName);
  const varint: number[] = [];
  for (let n = bytes.length; ; n >>>= 7) {
    if (n < 0x80) {
      varint.push(n);
      break;
    }
    varint.push((n & 0x7f) | 0x80);
  }
  return Buffer.concat([Buffer.from([(RUNC_OPTIONS_BINARY_NAME << 3) | 2, ...varint]), bytes]);
}

/** The socket path of `address`. */
function socketPath(address: string): string {
  const p = address.replace(/^unix:(\/\/)?/, '');
  return path.resolve(p);
}

/** Opens a client of the containerd at `options.address` (no call is made yet). */
export async function connectContainerd(options: ContainerdClientOptions): Promise<ContainerdClient> {
  return new ContainerdClient(await loadServices(), options);
}

/** A connection to one containerd, in one namespace. */
export class ContainerdClient implements ContainerdApi {
  /** The daemon's socket path, for messages. */
  readonly socket: string;
  readonly namespace: string;
  readonly #timeoutMs: number;
  readonly #version: ServiceClient;
  readonly #containers: ServiceClient;
  readonly #tasks: ServiceClient;
  readonly #events: ServiceClient;

  constructor(ctors: Record<ServiceName, ServiceConstructor>, options: ContainerdClientOptions) {
    this.socket = socketPath(options.address);
    this.namespace = options.namespace ?? 'kiln';
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    const target = `unix:${this.socket}`;
    const credentials = grpc.credentials.createInsecure();
    // A local daemon that restarts is back within a second: retry soon, not after grpc's default backoff.
    const channel: grpc.ChannelOptions = { 'grpc.initial_reconnect_backoff_ms': 100, 'grpc.max_reconnect_backoff_ms': 1000 };
    this.#version = new ctors.version(target, credentials, channel);
    // The four clients share one channel (grpc-js pools channels by target and options).
    this.#containers = new ctors.containers(target, credentials, channel);
    this.#tasks = new ctors.tasks(target, credentials, channel);
    this.#events = new ctors.events(target, credentials, channel);
  }

  /**
   * containerd's version; fails with an `unreachable` error when nothing
   * answers at the socket, at once or (`wait`) after the call's deadline.
   */
  async version(options: { wait?: boolean } = {}): Promise<{ version: string; revision: string }> {
    return (await this.#call(this.#version, 'Version', {}, { waitForReady: options.wait ?? false })) as { version: string; revision: string };
  }

  /** Creates a container record running under `runtime` with the OCI spec `specJson`. */
  async createContainer(options: { id: string; labels: Readonly<Record<string, string>>; runtime: string; specJson: string }): Promise<void> {
    await this.#call(this.#containers, 'Create', {
      container: {
        id: options.id,
        labels: options.labels,
        runtime: { name: options.runtime },
        spec: { type_url: SPEC_TYPE_URL, value: Buffer.from(options.specJson) },
      },
    });
  }

  /** Every container in the namespace. */
  async listContainers(): Promise<ContainerRecord[]> {
    const r = (await this.#call(this.#containers, 'List', {})) as { containers: { id: string; labels: Record<string, string> }[] };
    return r.containers.map((c) => ({ id: c.id, labels: c.labels }));
  }

  /** Deletes a container record (its task must be deleted first). */
  async deleteContainer(id: string): Promise<void> {
    await this.#call(this.#containers, 'Delete', { id });
  }

  /** Creates the task of container `containerId` (its init process, not started yet) over `rootfs`. */
  async createTask(containerId: string, rootfs: readonly TaskMount[], io: ProcessIo, options: TaskOptions = {}): Promise<void> {
    await this.#call(this.#tasks, 'Create', {
      container_id: containerId,
      rootfs: rootfs.map((m) => ({ type: m.type, source: m.source, options: [...m.options] })),
      stdin: io.stdin,
      stdout: io.stdout,
      stderr: io.stderr,
      terminal: io.terminal ?? false,
      ...(options.runcBinary === undefined ? {} : { options: { type_url: RUNC_OPTIONS_TYPE_URL, value: runcOptions(options.runcBinary) } }),
    });
  }

  /** Adds a process (not started yet) to a running task; `processJson` is an OCI process. */
  async exec(ref: Required<ProcessRef>, processJson: string, io: ProcessIo): Promise<void> {
    await this.#call(this.#tasks, 'Exec', {
      container_id: ref.containerId,
      exec_id: ref.execId,
      stdin: io.stdin,
      stdout: io.stdout,
      stderr: io.stderr,
      terminal: io.terminal ?? false,
      spec: { type_url: PROCESS_TYPE_URL, value: Buffer.from(processJson) },
    });
  }

  /** Starts a created task or exec'd process. */
  async start(ref: ProcessRef): Promise<void> {
    await this.#call(this.#tasks, 'Start', { container_id: ref.containerId, exec_id: ref.execId ?? '' });
  }

  /** Closes the process's stdin (the shim holds its FIFO open, so closing ours is not enough). */
  async closeStdin(ref: ProcessRef): Promise<void> {
    await this.#call(this.#tasks, 'CloseIO', { container_id: ref.containerId, exec_id: ref.execId ?? '', stdin: true });
  }

  /** Resolves with the exit status once the process has exited; no deadline. */
  async wait(ref: ProcessRef): Promise<number> {
    const r = (await this.#call(this.#tasks, 'Wait', { container_id: ref.containerId, exec_id: ref.execId ?? '' }, { timeoutMs: 0 })) as {
      exit_status: number;
    };
    return r.exit_status;
  }

  /** Sends signal number `signal` to the process, or with `all` to every process of the container. */
  async kill(ref: ProcessRef, signal: number, all = false): Promise<void> {
    await this.#call(this.#tasks, 'Kill', { container_id: ref.containerId, exec_id: ref.execId ?? '', signal, all });
  }

  /** Sets the size of the pseudo-terminal of a process run with `terminal`. */
  async resizePty(ref: ProcessRef, size: { readonly columns: number; readonly rows: number }): Promise<void> {
    await this.#call(this.#tasks, 'ResizePty', { container_id: ref.containerId, exec_id: ref.execId ?? '', width: size.columns, height: size.rows });
  }

  /** The task of container `containerId`; a `not-found` error when it has none. */
  async getTask(containerId: string): Promise<TaskState> {
    const r = (await this.#call(this.#tasks, 'Get', { container_id: containerId, exec_id: '' })) as {
      process: { container_id: string; pid: number; status: ProcessStatus };
    };
    return { containerId: r.process.container_id, pid: r.process.pid, status: r.process.status };
  }

  /** Deletes a stopped task (the shim unmounts its rootfs), or an exited exec'd process. */
  async delete(ref: ProcessRef): Promise<void> {
    if (ref.execId === undefined) await this.#call(this.#tasks, 'Delete', { container_id: ref.containerId });
    else await this.#call(this.#tasks, 'DeleteProcess', { container_id: ref.containerId, exec_id: ref.execId });
  }

  /**
   * Streams the container ids of the tasks deleted in the namespace (the
   * shim's announcement, sent once it has deleted the task) to `onDelete`,
   * until the returned function is called or the stream ends (containerd
   * went away), which `onEnd` is told.
   */
  watchTaskDeletes(onDelete: (containerId: string) => void, onEnd: () => void): () => void {
    const subscribe = this.#events['Subscribe'] as unknown as StreamMethod | undefined;
    if (subscribe === undefined) throw new KilnError(ERROR_CODES.INTERNAL, 'containerd API definition has no method Subscribe');
    // No namespace header: the events service filters by the namespace field.
    const filter = `topic=="/tasks/delete",namespace==${JSON.stringify(this.namespace)}`;
    const stream = subscribe.call(this.#events, { filters: [filter] }, new grpc.Metadata());
    let ended = false;
    const end = (): void => {
      if (ended) return;
      ended = true;
      onEnd();
    };
    stream.on('data', (envelope: { event?: { value?: { container_id?: string } } }) => {
      const id = envelope.event?.value?.container_id;
      if (id !== undefined && id !== '') onDelete(id);
    });
    // The error (containerd went away, or our cancel) only ends the stream: waiters fall back on their calls.
    stream.on('error', end);
    stream.on('end', end);
    return () => {
      ended = true;
      stream.cancel();
    };
  }

  /** Closes the connection; calls made after fail. */
  close(): void {
    this.#version.close();
    this.#containers.close();
    this.#tasks.close();
    this.#events.close();
  }

  #call(client: ServiceClient, method: string, request: object, options: { timeoutMs?: number; waitForReady?: boolean } = {}): Promise<unknown> {
    const fn = client[method];
    if (fn === undefined) throw new KilnError(ERROR_CODES.INTERNAL, `containerd API definition has no method ${method}`);
    // Waiting for the channel to be ready rides over a daemon restart (within the deadline).
    const metadata = new grpc.Metadata({ waitForReady: options.waitForReady ?? true });
    metadata.set('containerd-namespace', this.namespace);
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    const callOptions: grpc.CallOptions = timeoutMs > 0 ? { deadline: Date.now() + timeoutMs } : {};
    return new Promise((resolve, reject) => {
      fn.call(client, request, metadata, callOptions, (err, response) => {
        if (err === null) resolve(response);
        else reject(this.#error(method, err));
      });
    });
  }

  #error(method: string, err: grpc.ServiceError): ContainerdError {
    const raw = err.details || err.message;
    const details = err.code === grpc.status.UNAVAILABLE ? this.#unreachableReason(raw) : raw;
    switch (err.code) {
      case grpc.status.NOT_FOUND:
        return new ContainerdError('not-found', `containerd ${method}: ${details}`, details, err);
      case grpc.status.ALREADY_EXISTS:
        return new ContainerdError('already-exists', `containerd ${method}: ${details}`, details, err);
      case grpc.status.FAILED_PRECONDITION:
        return new ContainerdError('failed-precondition', `containerd ${method}: ${details}`, details, err);
      case grpc.status.UNAVAILABLE:
      case grpc.status.DEADLINE_EXCEEDED:
      case grpc.status.CANCELLED:
        return new ContainerdError('unreachable', `containerd at ${this.socket} is not reachable: ${details}`, details, err);
      default:
        return new ContainerdError('other', `containerd ${method}: ${details}`, details, err);
    }
  }

  /**
   * What grpc-js says when it cannot connect ("No connection established.
   * Last error: Error: connect ENOENT PATH. Resolution note: "), said as
   * what to check.
   */
  #unreachableReason(raw: string): string {
    const code = /\bconnect (E[A-Z]+)\b/.exec(raw)?.[1];
    switch (code) {
      case 'ENOENT':
        return `no socket at ${this.socket} (is containerd running, and is that its address?)`;
      case 'ECONNREFUSED':
        return `nothing listens on ${this.socket} (is containerd running?)`;
      case 'EACCES':
        return `permission denied on ${this.socket} (containerd's socket is usually root's)`;
      default:
        return raw.replace(/\s*Resolution note:\s*$/, '');
    }
  }
}
