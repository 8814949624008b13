/**
 * A kiln session: one root (cache, snapshots, store) and the workers over it.
 * The CLI and programs open one, solve any number of definitions, and close it.
 */
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { createCacheManager } from '../cache/manager.js';
import type { ContentStore } from '../content/store.js';
import type { CacheManager, PruneOptions, PruneReport, UsageRecord } from '../cache/types.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import { hostPlatform } from '../llb/load.js';
import { type Logger, silentLogger } from '../log.js';
import type { Executor, ExitStatus, ProcessTerminal } from '../executor/types.js';
import type { CacheKey, Digest } from '../digest.js';
import type { Op } from '../llb/types.js';
import { openShell } from '../ops/exec/run.js';
import { durationMs } from '../duration.js';
import { DEFAULT_RETENTION, type DebugShellSpec, type RetentionPolicy } from '../history/record.js';
import { HistoryStore } from '../history/store.js';
import { createNetworkProvider, DEFAULT_NETWORK_DIR, type NetworkProviderOptions } from '../network/provider.js';
import { NETWORK_PROVIDER_CHOICES, type NetworkProvider, type NetworkProviderChoice } from '../network/types.js';
import { rootLayout } from '../store/layout.js';
import type { FileHashCache } from '../source/local/checksum.js';
import type { HttpValidatorStore } from '../source/http/validators.js';
import { WorkerController } from '../worker/controller.js';
import { DEFAULT_CONFIG, type KilnConfig } from './config.js';
import { type NamedImage, Storage } from './storage.js';
import type { RerunHistory } from '../ops/rerun-history.js';
import type { Worker } from '../worker/types.js';

export type SnapshotterChoice = 'auto' | 'overlayfs' | 'native';

export interface SessionOptions {
  /** kiln's state directory; see defaultRoot(). */
  readonly root?: string;
  readonly snapshotter?: SnapshotterChoice;
  readonly logger?: Logger;
  /**
   * containerd's socket (a path or `unix://` address) for the containerd
   * worker; defaults to `KILN_CONTAINERD_ADDRESS`. Without one that worker is
   * listed as unavailable.
   */
  readonly containerdAddress?: string;
  /** containerd namespace for kiln's containers (default `kiln`). */
  readonly containerdNamespace?: string;
  /** kiln.toml's settings (see `loadConfig`); default: none, every setting at its default. */
  readonly config?: KilnConfig;
  /**
   * The network of sandboxed exec ops (see src/network/). Each field
   * defaults to its environment variable: KILN_NETWORK_PROVIDER,
   * KILN_NETWORK_CIDR, KILN_CNI_CONFIG, KILN_CNI_BIN_DIR (`:`-separated),
   * KILN_RESOLV_CONF.
   */
  readonly network?: SessionNetworkOptions;
  /**
   * How much build history is kept (the CLI's `--history-keep-*` flags).
   * Each field defaults to its environment variable (KILN_HISTORY_KEEP_DURATION,
   * KILN_HISTORY_KEEP_BUILDS), then to kiln.toml's `[history]`, then to 48 hours
   * and 50 builds. `keepBuilds: 0` records no history.
   */
  readonly history?: Partial<RetentionPolicy>;
}

/** What `Session.prune` removed: cache records and blobs, and builds of the history. */
export interface SessionPruneReport extends PruneReport {
  /** The ids of the builds removed from the history. */
  readonly history: readonly string[];
}

/** The history's retention: the caller's, else the environment's, else kiln.toml's, else the defaults. */
export function historyRetention(given: Partial<RetentionPolicy> = {}, config: KilnConfig = DEFAULT_CONFIG, env: Readonly<Record<string, string | undefined>> = process.env): RetentionPolicy {
  const read = <T>(name: string, parse: (text: string) => T | undefined, expected: string): T | undefined => {
    const text = env[name];
    if (text === undefined || text === '') return undefined;
    const value = parse(text);
    if (value === undefined) throw new KilnError(ERROR_CODES.USAGE, `${name} "${text}": expected ${expected}`);
    return value;
  };
  const builds = (text: string): number | undefined => (/^\d+$/.test(text) ? Number(text) : undefined);
  return {
    keepDurationMs: given.keepDurationMs ?? read('KILN_HISTORY_KEEP_DURATION', durationMs, 'a duration such as 48h') ?? config.history.keepDurationMs ?? DEFAULT_RETENTION.keepDurationMs,
    keepBuilds: given.keepBuilds ?? read('KILN_HISTORY_KEEP_BUILDS', builds, 'a whole number of builds (0 keeps none)') ?? config.history.keepBuilds ?? DEFAULT_RETENTION.keepBuilds,
  };
}

/** The network options a session takes (the provider's, less what the session knows). */
export type SessionNetworkOptions = Omit<NetworkProviderOptions, 'root' | 'logger' | 'dir' | 'bridge' | 'maxIdle'> &
  Partial<Pick<NetworkProviderOptions, 'dir' | 'bridge' | 'maxIdle'>>;

/** The session's network options: the caller's, else the environment's. */
export function networkOptionsFromEnv(given: SessionNetworkOptions = {}): SessionNetworkOptions {
  const env = (name: string): string | undefined => {
    const value = process.env[name];
    return value === undefined || value === '' ? undefined : value;
  };
  const choice = given.choice ?? env('KILN_NETWORK_PROVIDER');
  if (choice !== undefined && !(NETWORK_PROVIDER_CHOICES as readonly string[]).includes(choice)) {
    throw new KilnError(ERROR_CODES.USAGE, `network provider "${choice}" is not one of ${NETWORK_PROVIDER_CHOICES.join(', ')} (KILN_NETWORK_PROVIDER or --network-provider)`);
  }
  const cidr = given.cidr ?? env('KILN_NETWORK_CIDR');
  const cniConfig = given.cniConfig ?? env('KILN_CNI_CONFIG');
  const cniBinDirs = given.cniBinDirs ?? env('KILN_CNI_BIN_DIR')?.split(':').filter((d) => d !== '');
  const resolvConf = given.resolvConf ?? env('KILN_RESOLV_CONF');
  return {
    ...given,
    ...(choice === undefined ? {} : { choice: choice as NetworkProviderChoice }),
    ...(cidr === undefined ? {} : { cidr }),
    ...(cniConfig === undefined ? {} : { cniConfig }),
    ...(cniBinDirs === undefined ? {} : { cniBinDirs }),
    ...(resolvConf === undefined ? {} : { resolvConf }),
  };
}

/**
 * Removes the network namespaces (CNI DEL first) that killed kiln processes
 * left, as a worker's start removes their containers: a build that needs
 * no network of its own still cleans up after one that did.
 */
async function sweepNetworks(dir: string | undefined, logger: Logger): Promise<void> {
  const { sweepDeadOwners } = await import('../network/namespace-pool.js');
  if (process.getuid?.() === 0) await sweepDeadOwners(dir ?? DEFAULT_NETWORK_DIR, logger);
}

/** `/var/lib/kiln` for root, else `$XDG_DATA_HOME/kiln` (`~/.local/share/kiln`). */
export function defaultRoot(): string {
  if (process.getuid?.() === 0) return '/var/lib/kiln';
  const dataHome = process.env['XDG_DATA_HOME'] ?? join(homedir(), '.local', 'share');
  return join(dataHome, 'kiln');
}

/** An open root with its workers. Close it when done (or `await using`). */
export class Session implements AsyncDisposable {
  readonly root: string;
  readonly workers: WorkerController;
  readonly logger: Logger;
  /** Blobs (layers, configs, manifests) of images pulled and built in this root, and their records. */
  readonly content: ContentStore;
  /** The local sources' file-hash index. */
  readonly localHashes: FileHashCache;
  /** What sandboxed exec ops get for a network; set up when a build first needs it. */
  readonly network: NetworkProvider;
  /** The settings from kiln.toml this session runs with (registry hosts and mirrors). */
  readonly config: KilnConfig;
  /** What HTTP sources remember of their downloads (ETag, Last-Modified, digest). */
  readonly httpValidators: HttpValidatorStore;
  /** What each op's key was made of in its latest build (`reason` of the vertices that rerun). */
  readonly rerunHistory: RerunHistory;
  /** The build history of this root: a record and the full step logs of each solve. */
  readonly history: HistoryStore;
  readonly #cache: CacheManager;
  readonly #storage: Storage;
  /** Where the network provider keeps its namespaces (parked ones too); set by open. */
  #networkDir = DEFAULT_NETWORK_DIR;
  /** The sweep of dead processes' networks, once a worker began it; set by open. */
  #sweeping: () => Promise<void> | undefined = () => undefined;

  private constructor(root: string, storage: Storage, cache: CacheManager, workers: WorkerController, logger: Logger, network: NetworkProvider, config: KilnConfig, history: HistoryStore) {
    this.root = root;
    this.history = history;
    this.network = network;
    this.config = config;
    this.#storage = storage;
    this.content = storage.content;
    this.localHashes = storage.localHashes;
    this.httpValidators = storage.httpValidators;
    this.rerunHistory = storage.rerunHistory;
    this.#cache = cache;
    this.workers = workers;
    this.logger = logger;
  }

  /** Opens (creating if needed) the root and registers the workers. */
  static async open(options: SessionOptions = {}): Promise<Session> {
    // resolve('') is the working directory: an empty root is a mistake, not a choice.
    if (options.root?.trim() === '') throw new KilnError(ERROR_CODES.USAGE, "the root is empty: give the directory for kiln's state");
    const root = resolve(options.root ?? defaultRoot());
    const logger = options.logger ?? silentLogger();
    const history = new HistoryStore(rootLayout(root).history, historyRetention(options.history, options.config));
    // The session owns the store: each owner gets its tables from it, and it closes last.
    const storage = await Storage.open(root);
    let cache: CacheManager;
    try {
      cache = await createCacheManager({ root, snapshotter: options.snapshotter ?? 'auto', logger, store: storage.store });
    } catch (err) {
      await storage.close();
      throw err;
    }
    // One provider for every worker: the bridge and its addresses are the host's, not a worker's.
    // Flags, then the environment, then kiln.toml's [network].
    const networkOptions = { ...options.config?.network, ...networkOptionsFromEnv(options.network) };
    const network = createNetworkProvider({ ...networkOptions, root, logger });
    // Once per session, by the first worker to start (see sweepNetworks).
    let swept: Promise<void> | undefined;
    const worker = async (id: string, executor: Executor): Promise<Worker> => {
      await (swept ??= sweepNetworks(networkOptions.dir, logger));
      return workerRecord(id, executor);
    };
    const workerRecord = (id: string, executor: Executor): Worker => ({
      id,
      labels: { 'kiln.executor': executor.name, 'kiln.snapshotter': cache.snapshotter },
      platforms: [hostPlatform()],
      snapshotter: cache.snapshotter,
      executor,
      cache,
      network,
    });
    // The runc-backed worker is the default (priority 0), as the OCI worker is in buildkitd.
    // Each worker starts when a build first needs it (see WorkerController).
    const workers = WorkerController.create([
      {
        id: 'runc',
        priority: 0,
        init: async () => {
          const { createRuncExecutor, findRunc, RUNC_MOUNT_SUPPORT } = await import('../executor/runc.js');
          const { DeferredExecutor } = await import('../executor/deferred.js');
          // runc being there makes the worker available; the rest of the
          // executor's setup waits for its first container (see
          // deferred.ts): a build whose steps all come from the cache starts
          // none. The sweep of dead processes' networks is begun now, as
          // any build cleans up after a killed one, and goes on beside the
          // build: the first container and the session's close wait for it.
          const runcPath = await findRunc(undefined);
          swept ??= sweepNetworks(networkOptions.dir, logger);
          const sweeping = swept;
          sweeping.catch(() => undefined);
          const executor = new DeferredExecutor({
            name: 'runc',
            mountSupport: RUNC_MOUNT_SUPPORT,
            create: async () => {
              await sweeping;
              const { executorRuntimeDir } = await import('../executor/runtime-dir.js');
              // Bundles hold secretEnv values: on a tmpfs, never under the root. A cancelled
              // build should stop promptly: 3 s for processes to exit on SIGTERM, then SIGKILL.
              return createRuncExecutor({
                runcPath,
                stateDir: await executorRuntimeDir({ root, executor: 'runc' }),
                formerStateDir: join(rootLayout(root).executors, 'runc'),
                logger,
                killGraceMs: 3000,
              });
            },
          });
          return workerRecord('runc', executor);
        },
      },
      // As in buildkitd, the containerd worker comes after the OCI (runc) one.
      {
        id: 'containerd',
        priority: 1,
        init: async () => {
          const address = options.containerdAddress ?? process.env['KILN_CONTAINERD_ADDRESS'];
          if (address === undefined || address === '') {
            throw new KilnError(ERROR_CODES.EXECUTOR, 'no containerd address: pass --containerd-address or set KILN_CONTAINERD_ADDRESS');
          }
          const { createContainerdExecutor } = await import('../executor/containerd/executor.js');
          const { executorRuntimeDir } = await import('../executor/runtime-dir.js');
          const executor = await createContainerdExecutor({
            address,
            ...(options.containerdNamespace === undefined ? {} : { namespace: options.containerdNamespace }),
            stateDir: await executorRuntimeDir({ root, executor: 'containerd' }),
            formerStateDir: join(rootLayout(root).executors, 'containerd'),
            logger,
            killGraceMs: 3000,
            // The worker is made as a build starts: its shim starts while the build resolves its graph.
            startShim: true,
          });
          return worker('containerd', executor);
        },
      },
    ]);
    const session = new Session(root, storage, cache, workers, logger, network, options.config ?? DEFAULT_CONFIG, history);
    session.#networkDir = networkOptions.dir ?? DEFAULT_NETWORK_DIR;
    session.#sweeping = () => swept;
    return session;
  }

  /** Cache records, content blobs and named images, with their sizes (`kiln du`). */
  du(): Promise<readonly UsageRecord[]> {
    return this.#storage.du(this.#cache);
  }

  /**
   * Removes unreferenced cache records, blobs and index entries, never what
   * a running build uses (`kiln prune`), and the builds of the history its
   * retention no longer keeps (with `all`, every finished build).
   */
  async prune(options: PruneOptions): Promise<SessionPruneReport> {
    // The history first: the step results its kept records name stay until
    // those records go (kiln debug opens them); `all` takes both.
    const history = await this.history.prune(options.all === true ? { all: true } : {});
    const kept = options.all === true ? [] : await this.history.list();
    const keepKeys = new Set(kept.flatMap((r) => r.vertices.flatMap((v) => (v.key === undefined ? [] : [v.key]))));
    const report = await this.#storage.prune(this.#cache, keepKeys.size === 0 ? options : { ...options, keepKeys });
    // Network namespaces parked for the next kiln are the host's, not the root's: only `all` takes them.
    if (options.all === true && process.getuid?.() === 0) {
      const { removeParkedNamespaces } = await import('../network/namespace-pool.js');
      await removeParkedNamespaces(this.#networkDir, this.logger);
    }
    return { ...report, history };
  }

  /**
   * Opens a shell on the result of one step of a recorded build (`kiln
   * debug`): a new container whose root is a fresh snapshot of that result
   * (discarded after), with an exec step's env, working directory, user and
   * network mode, on `terminal`. The result must still be in the cache (the
   * record names its key); other mounts of the step are not there. Resolves
   * with the shell's exit status once everything is released.
   */
  async debugShell(options: DebugShellOptions): Promise<ExitStatus> {
    const record = options.id === undefined ? await this.history.latest() : await this.history.get(options.id);
    const vertex = record.vertices.find((v) => v.op === options.vertex || v.name === options.vertex || v.digest === options.vertex || v.digest === `sha256:${options.vertex}`);
    if (vertex === undefined) {
      throw new KilnError(ERROR_CODES.HISTORY_NOT_FOUND, `build ${record.id} has no step "${options.vertex}" (kiln history inspect ${record.id} lists them)`);
    }
    if (vertex.key === undefined) {
      throw new KilnError(ERROR_CODES.HISTORY_NOT_FOUND, `step "${vertex.name}" of build ${record.id} has no result to open (it did not finish, or the record predates kiln debug)`);
    }
    const worker = await this.workers.select(options.worker === undefined ? {} : { id: options.worker });
    if (worker.executor === undefined) throw new KilnError(ERROR_CODES.NO_EXECUTOR, `worker ${worker.id} cannot run processes, so it cannot open a shell`);
    const refs = await worker.cache.lookup(vertex.key as CacheKey);
    if (refs === undefined) {
      throw new KilnError(ERROR_CODES.HISTORY_NOT_FOUND, `the result of step "${vertex.name}" of build ${record.id} is no longer in the cache (pruned); build it again to open it`);
    }
    try {
      const spec = vertex.shell ?? { env: [], cwd: '/', user: 'root', network: 'sandbox' as const, rootOutput: 0 };
      const root = refs[spec.rootOutput] ?? null;
      return await openShell(
        { op: debugOp(vertex.digest, spec), inputs: [root], executor: worker.executor, ctx: { worker, logger: this.logger } },
        { terminal: options.terminal, ...(options.args === undefined ? {} : { args: options.args }), ...(options.signal === undefined ? {} : { signal: options.signal }) },
      );
    } finally {
      for (const ref of refs) await ref?.release();
    }
  }

  /** Images kept by `type=image` outputs (`kiln images`). */
  images(): readonly NamedImage[] {
    return this.#storage.images();
  }

  /** Forgets a named image; its blobs go at the next prune unless something else keeps them (`kiln images rm`). */
  removeImage(name: string): NamedImage {
    return this.#storage.removeImage(name);
  }

  async close(): Promise<void> {
    try {
      // A sweep begun beside the build ends before the process can (a failed one was the first container's to report).
      await this.#sweeping()?.catch((err: unknown) => this.logger.warn({ err }, "sweeping dead processes' networks failed"));
      await this.workers.close();
      // After the workers: no container is left in a namespace it tears down.
      await this.network.close();
      await this.#cache.close();
    } finally {
      await this.#storage.close();
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** What {@link Session.debugShell} opens. */
export interface DebugShellOptions {
  /** The build (an id or its unique start); default the latest. */
  readonly id?: string;
  /** The step, by name or digest. */
  readonly vertex: string;
  readonly terminal: ProcessTerminal;
  /** The shell's command; default `/bin/sh`. */
  readonly args?: readonly string[];
  readonly worker?: string;
  readonly signal?: AbortSignal;
}

/** An exec op that only mounts a result at `/` with the recorded step's meta, for openShell. */
function debugOp(digest: string, spec: DebugShellSpec): Op & { body: { kind: 'exec' } } {
  return {
    name: 'debug',
    inputs: [],
    platform: hostPlatform(),
    constraints: [],
    metadata: { description: {}, ignoreCache: true },
    digest: digest as Digest,
    outputCount: 0,
    body: {
      kind: 'exec',
      exec: {
        meta: { args: [], env: spec.env, cwd: spec.cwd, user: spec.user, hostname: '', extraHosts: [], ulimit: [], cgroupParent: '', validExitCodes: [0] },
        mounts: [{ type: 'bind', dest: '/', input: 0, selector: '', output: -1, readonly: false }],
        network: spec.network,
        security: 'sandbox',
        secretEnv: [],
      },
    },
  };
}
