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
import type { Executor } from '../executor/types.js';
import { rootLayout } from '../store/layout.js';
import type { FileHashCache } from '../source/local/checksum.js';
import type { HttpValidatorStore } from '../source/http/validators.js';
import { WorkerController } from '../worker/controller.js';
import { type NamedImage, Storage } from './storage.js';
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
  /** What HTTP sources remember of their downloads (ETag, Last-Modified, digest). */
  readonly httpValidators: HttpValidatorStore;
  readonly #cache: CacheManager;
  readonly #storage: Storage;

  private constructor(root: string, storage: Storage, cache: CacheManager, workers: WorkerController, logger: Logger) {
    this.root = root;
    this.#storage = storage;
    this.content = storage.content;
    this.localHashes = storage.localHashes;
    this.httpValidators = storage.httpValidators;
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
    // The session owns the store: each owner gets its tables from it, and it closes last.
    const storage = await Storage.open(root);
    let cache: CacheManager;
    try {
      cache = await createCacheManager({ root, snapshotter: options.snapshotter ?? 'auto', logger, store: storage.store });
    } catch (err) {
      await storage.close();
      throw err;
    }
    const worker = (id: string, executor: Executor): Worker => ({
      id,
      labels: { 'kiln.executor': executor.name, 'kiln.snapshotter': cache.snapshotter },
      platforms: [hostPlatform()],
      snapshotter: cache.snapshotter,
      executor,
      cache,
    });
    // The runc-backed worker is the default (priority 0), as the OCI worker is in buildkitd.
    // Each worker starts when a build first needs it (see WorkerController).
    const workers = WorkerController.create([
      {
        id: 'runc',
        priority: 0,
        init: async () => {
          const { createRuncExecutor } = await import('../executor/runc.js');
          const { executorRuntimeDir } = await import('../executor/runtime-dir.js');
          // Bundles hold secretEnv values: on a tmpfs, never under the root. A cancelled
          // build should stop promptly: 3 s for processes to exit on SIGTERM, then SIGKILL.
          const executor = await createRuncExecutor({
            stateDir: await executorRuntimeDir({ root, executor: 'runc' }),
            formerStateDir: join(rootLayout(root).executors, 'runc'),
            logger,
            killGraceMs: 3000,
          });
          return worker('runc', executor);
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
          });
          return worker('containerd', executor);
        },
      },
    ]);
    return new Session(root, storage, cache, workers, logger);
  }

  /** Cache records, content blobs and named images, with their sizes (`kiln du`). */
  du(): Promise<readonly UsageRecord[]> {
    return this.#storage.du(this.#cache);
  }

  /** Removes unreferenced cache records, blobs and index entries, never what a running build uses (`kiln prune`). */
  prune(options: PruneOptions): Promise<PruneReport> {
    return this.#storage.prune(this.#cache, options);
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
      await this.workers.close();
      await this.#cache.close();
    } finally {
      await this.#storage.close();
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
