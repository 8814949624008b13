/**
 * The session's storage: it opens kiln's store for a root and gives each
 * owner its own typed tables (the cache manager its own, the content folder
 * its records, the local sources their hash index), so no table is written by
 * a folder that does not own it. It also runs the one collector: the cache
 * manager's sweep of results and snapshots, then the content store's sweep of
 * records and blobs from the layers left (content/collect.ts), then the hash
 * index, then git sources' bare repositories; and `du` over all of them.
 */
import { lstat, readdir } from 'node:fs/promises';
import path from 'node:path';
import type { CacheManager, PruneOptions, PruneReport, UsageRecord } from '../cache/types.js';
import { heldKeys, Lease } from '../cache/leases.js';
import { blobUsage, sweepContent } from '../content/collect.js';
import { contentRecords, type ContentRecords, type LayerBlobRecord, type NamedImageRecord, type ResolvedRecord } from '../content/records.js';
import { formatReference, parseReference } from '../content/reference.js';
import { ContentStore } from '../content/store.js';
import type { Descriptor } from '../content/types.js';
import type { Digest } from '../digest.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import { RerunHistory, type RerunKey, type RerunRecord } from '../ops/rerun-history.js';
import { type HttpValidatorRecord, StoredHttpValidators } from '../source/http/validators.js';
import { gitRepoUsage, removeGitRepo } from '../source/git/remote-cache.js';
import { type HashIndexRecord, type LocalImportRecord, StoredHashIndex } from '../source/local/hash-index.js';
import { makeDirectories, rootLayout } from '../store/layout.js';
import { openStore, type KvEnv, type Store } from '../store/store.js';

/** The kind of the holds on blobs in the volatile store (snapshot holds carry their snapshotter's name). */
const BLOB_HOLDS = 'content';

/** One image kept under a name, as `kiln images` lists it. */
export interface NamedImage extends NamedImageRecord {
  readonly name: string;
}

/** kiln's store for one root and the tables handed to each owner. */
export class Storage {
  readonly store: Store;
  readonly content: ContentStore;
  readonly localHashes: StoredHashIndex;
  readonly httpValidators: StoredHttpValidators;
  /** What each op's key was made of in its latest build, to say why it reruns. */
  readonly rerunHistory: RerunHistory;
  readonly #records: ContentRecords;
  readonly #blobLease: Lease<Digest>;
  readonly #root: string;

  private constructor(root: string, store: Store) {
    this.store = store;
    this.#root = rootLayout(root).root;
    this.#records = contentRecords(store.durable);
    this.#blobLease = new Lease<Digest>(store.volatile, BLOB_HOLDS);
    const volatile = store.volatile;
    this.content = new ContentStore(root, {
      records: this.#records,
      holds: {
        hold: (digest) => this.#blobLease.acquire([digest]),
        exclusive: (fn) => volatile.write(() => fn(heldKeys<Digest>(volatile, BLOB_HOLDS))),
      },
    });
    this.localHashes = new StoredHashIndex(store.durable.table<HashIndexRecord>('source/local/hash-index'), store.durable.table<LocalImportRecord>('source/local/imports'));
    this.httpValidators = new StoredHttpValidators(store.durable.table<HttpValidatorRecord>('source/http/validators'));
    this.rerunHistory = new RerunHistory({
      records: store.durable.table<RerunRecord>('ops/rerun-history'),
      keys: store.durable.table<RerunKey>('ops/rerun-keys'),
      transaction: (fn) => store.durable.write(fn),
    });
  }

  /** Opens (creating if needed) the store of `root`. */
  static async open(root: string): Promise<Storage> {
    const layout = rootLayout(root);
    try {
      await makeDirectories(layout.store);
    } catch (err) {
      throw new KilnError(ERROR_CODES.CACHE_STORE, `cannot create kiln's root at ${layout.root}: ${(err as Error).message}`, { cause: err });
    }
    const store = await openStore(layout.store);
    try {
      migrateMetadata(store.durable);
      return new Storage(root, store);
    } catch (err) {
      await store.close();
      throw err;
    }
  }

  /** Every record and its size: the cache's, then each blob, then each named image. */
  async du(cache: CacheManager): Promise<UsageRecord[]> {
    const records = [...(await cache.du())];
    this.store.volatile.refresh();
    const held = heldKeys<Digest>(this.store.volatile, BLOB_HOLDS);
    for (const blob of await blobUsage(this.content, () => cache.layerIds(), held)) {
      records.push({
        id: blob.digest,
        description: blob.reason === '' ? 'unreferenced blob' : blob.reason,
        size: blob.size,
        createdAt: blob.modifiedAt,
        lastUsedAt: blob.modifiedAt,
        inUse: blob.held,
        shared: false,
        kind: 'blob',
      });
    }
    for (const repo of await gitRepoUsage(rootLayout(this.#root).git)) {
      records.push({ id: repo.id, description: `git repository ${repo.url}`, size: repo.size, createdAt: repo.createdAt, lastUsedAt: repo.lastUsedAt, inUse: false, shared: false, kind: 'git' });
    }
    records.push({ id: 'store', description: "kiln's records (lmdb) and the root's folders", size: await this.#storeSize(), createdAt: 0, lastUsedAt: 0, inUse: true, shared: false, kind: 'store' });
    for (const image of this.images()) {
      records.push({ id: image.name, description: `image ${image.manifest.digest}`, size: image.size, createdAt: image.createdAt, lastUsedAt: image.createdAt, inUse: false, shared: false, kind: 'image' });
    }
    return records;
  }

  /** One mark and sweep: results and snapshots, then layer records and blobs, then the hash index, HTTP validators and rerun history. */
  async prune(cache: CacheManager, options: PruneOptions): Promise<PruneReport> {
    const now = Date.now();
    const cached = await cache.prune(options);
    const swept = await sweepContent(this.content, () => cache.layerIds());
    // Index entries are small: a prune that only trims to a size keeps them.
    if (options.all === true || options.keepStorage === undefined) {
      this.store.durable.write(() => {
        this.localHashes.prune(options.all === true ? {} : options, now);
        this.httpValidators.prune(options.all === true ? {} : options, now);
        this.rerunHistory.prune(options.all === true ? {} : options, now);
      });
    }
    const blobs = swept.removed.map(
      (b): UsageRecord => ({ id: b.digest, description: 'blob', size: b.size, createdAt: b.modifiedAt, lastUsedAt: b.modifiedAt, inUse: false, shared: false, kind: 'blob' }),
    );
    const repos = await this.#pruneGitRepos(options, now);
    const removed = [...cached.removed, ...blobs, ...repos];
    return { removed, reclaimedBytes: cached.reclaimedBytes + [...blobs, ...repos].reduce((n, b) => n + b.size, 0) };
  }

  /**
   * git sources' bare repositories: all with `all`, those unused for
   * `keepDuration` with it; a size limit alone keeps them (the next build of
   * a branch would fetch it again). One a build holds is never removed.
   */
  async #pruneGitRepos(options: PruneOptions, now: number): Promise<UsageRecord[]> {
    if (options.all !== true && options.keepDuration === undefined) return [];
    const dir = rootLayout(this.#root).git;
    const removed: UsageRecord[] = [];
    for (const repo of await gitRepoUsage(dir)) {
      const old = options.all === true || now - repo.lastUsedAt > (options.keepDuration ?? Infinity);
      if (old && (await removeGitRepo(dir, repo.id))) {
        removed.push({ id: repo.id, description: `git repository ${repo.url}`, size: repo.size, createdAt: repo.createdAt, lastUsedAt: repo.lastUsedAt, inUse: false, shared: false, kind: 'git' });
      }
    }
    return removed;
  }

  /** The images kept by `type=image` outputs, by name. */
  images(): NamedImage[] {
    this.store.durable.refresh();
    return [...this.#records.images.entries()].map(([name, record]) => ({ name, ...record }));
  }

  /** Forgets the image kept under `name` (its blobs go at the next prune, unless something else keeps them). */
  removeImage(name: string): NamedImage {
    const key = normalizedName(name);
    const removed = this.store.durable.write(() => {
      const record = this.#records.images.get(key);
      if (record !== undefined) this.#records.images.remove(key);
      return record;
    });
    if (removed === undefined) throw new KilnError(ERROR_CODES.IMAGE_NOT_FOUND, `no image named ${name} in kiln's store (kiln images lists them)`);
    return { name: key, ...removed };
  }

  /**
   * Bytes of what no other record counts: the store's files (ROOT/store)
   * and the root's folders themselves. Snapshot and cache-mount folders are
   * counted as folders, their contents by their own records; blob files by theirs.
   */
  async #storeSize(): Promise<number> {
    const walk = async (dir: string, rel: readonly string[]): Promise<number> => {
      let total = 0;
      const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
      for (const entry of entries) {
        const at = [...rel, entry.name];
        const info = await lstat(path.join(dir, entry.name)).catch(() => undefined);
        if (info === undefined) continue;
        if (entry.isDirectory()) {
          total += info.size;
          const measuredElsewhere = (at[0] === 'snapshots' && at.length >= 3) || (at[0] === 'cache-mounts' && at.length >= 2) || (at[0] === 'git' && at.length >= 2);
          if (!measuredElsewhere) total += await walk(path.join(dir, entry.name), at);
        } else if (at[0] === 'store') {
          total += info.size;
        }
      }
      return total;
    };
    return walk(this.#root, []);
  }

  async close(): Promise<void> {
    this.#blobLease.close();
    await this.store.close();
  }
}

/** The key a name is kept under: the normalized reference (`busybox` is `docker.io/library/busybox:latest`). */
function normalizedName(name: string): string {
  try {
    return formatReference(parseReference(name));
  } catch (err) {
    throw new KilnError(ERROR_CODES.USAGE, `image name "${name}": ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

/**
 * Roots written before the tables had owners kept everything in one
 * `metadata` table (`NAMESPACE\0KEY`). Its records move to their owners'
 * tables once; the local hash index is left to be rebuilt by the next build.
 */
function migrateMetadata(env: KvEnv): void {
  const legacy = env.table<unknown>('metadata');
  if (legacy.entries()[Symbol.iterator]().next().done === true) return;
  const records = contentRecords(env);
  env.write(() => {
    for (const [full, value] of [...legacy.entries()]) {
      const sep = full.indexOf('\0');
      const namespace = full.slice(0, sep);
      const key = full.slice(sep + 1);
      if (namespace === 'layer-blobs') records.layerBlobs.put(key, value as LayerBlobRecord);
      else if (namespace === 'image-refs') records.resolved.put(key, value as ResolvedRecord);
      else if (namespace === 'images') {
        const manifest = value as Descriptor;
        records.images.put(key, { manifest, size: manifest.size, createdAt: Date.now() });
      }
      legacy.remove(full);
    }
  });
}
