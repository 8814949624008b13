/**
 * The cache manager: refs over one snapshotter, the results cache, leases
 * shared with other processes, and garbage collection.
 *
 * Layout of kiln's root (`--root DIR`; paths spelled in src/store/layout.ts):
 *
 *     ROOT/store/durable/             lmdb, synced: snapshot records, results,
 *                                     ref descriptions and sizes; and the
 *                                     tables the session gives other owners
 *                                     (content/..., source/local/...)
 *     ROOT/store/leases-BOOTID/       lmdb, never synced, one per boot: leases
 *                                     and the snapshots they hold
 *     ROOT/snapshots/overlayfs/ID/    one folder per snapshot: fs/ (its layer),
 *                                     work/ (while active), flatN/ (a
 *                                     flattened stack); empty/ is shared
 *     ROOT/snapshots/native/ID/fs/    the snapshot's whole tree
 *     ROOT/cache-mounts/KEY/N/fs/     cache mount directories (./cache-mounts.ts)
 *     ROOT/content/blobs/sha256/HEX   blobs: image layers, configs, manifests
 *                                     (src/content/store.ts)
 *     ROOT/mounts/PID-START-RANDOM/   temporary mountpoints
 *     ROOT/tmp/PID-START-.../         scratch (the overlayfs probe)
 *     ROOT/locks/claim-SNAPSHOTTER-XX flock files of claims (`claim`): one
 *                                     process unpacks a layer, the others wait
 *                                     and take its result
 *
 * Crash safety. A process may be killed at any point; the next open must
 * neither fail nor serve a half-made result. Hence the order of writes:
 * a snapshot is held by the lease before it is created; it is recorded
 * (active) before its folder exists and committed only when complete; a
 * result record is written after its snapshots are committed, in one
 * transaction. What a dead process leaves (its lease, the active snapshots
 * and committed orphans only it held, its mounts and temp files) is found on
 * open: mounts and temp files by their owner names, snapshots by a sweep
 * that no longer counts the dead lease's holds.
 *
 * Garbage collection is mark and sweep: the roots are the result records,
 * the holds of live leases, and the active snapshots of live processes (an
 * active record names its maker, so work in progress is safe even from a
 * sweep that misses a hold); a snapshot stays while a kept snapshot has
 * it as a parent (overlay layers are shared along parents). Deciding and sweeping happen in one write transaction of
 * the durable store, which another process's lookup cannot interleave with
 * unnoticed: a lookup holds first, then checks the record is still there.
 * Cache mounts are plain directories outside the snapshotter; prune removes
 * those nobody uses, and du lists them (./cache-mounts.ts).
 */
import { randomBytes } from 'node:crypto';
import pLimit from 'p-limit';
import type { Logger } from '../log.js';
import type { CacheKey } from '../digest.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import { openSnapshotter, type SnapshotterName } from '../snapshot/open-snapshotter.js';
import { overlaySupported } from '../snapshot/overlay-probe.js';
import type { ManagedSnapshotter } from '../snapshot/stored-snapshotter.js';
import type { Mount, SnapshotKey } from '../snapshot/types.js';
import { lockFile } from '../store/file-lock.js';
import { makeDirectories, rootLayout } from '../store/layout.js';
import { openStore, type KvTable, type Store } from '../store/store.js';
import { CacheMounts } from './cache-mounts.js';
import { deadLeases, heldSnapshots, Lease, removeLeases } from './leases.js';
import { selectPrunable, usageRecords, type CacheView, type RootRecord } from './prune.js';
import { ImmutableHandle, MutableHandle, type RefHost } from './refs.js';
import type {
  CacheManager,
  CacheMountOptions,
  CacheMountRef,
  HeldClaim,
  ImmutableRef,
  MutableRef,
  PruneOptions,
  PruneReport,
  RecordDescription,
  ResultRef,
  UsageRecord,
} from './types.js';

/** How to open a cache manager. */
export interface CacheManagerOptions {
  /** kiln's root directory; created if missing. */
  readonly root: string;
  /**
   * `auto` (default) uses the snapshotter this root was first opened with,
   * or on a new root overlayfs if the kernel lets kiln mount it here, else native.
   */
  readonly snapshotter?: SnapshotterName | 'auto';
  /** Diagnostics (never progress). */
  readonly logger?: Logger;
  /**
   * kiln's store for this root, opened by its owner (the session), who
   * closes it after the manager; without it the manager opens and closes its own.
   */
  readonly store?: Store;
}

/** What kiln remembers of a snapshot it made. */
interface RefRecord {
  readonly description: string;
  readonly createdAt: number;
  /** Own-layer bytes, measured once the snapshot is committed (immutable). */
  readonly size?: number;
}

/** Opens the cache in `options.root`, cleaning what crashed processes left there. */
export async function createCacheManager(options: CacheManagerOptions): Promise<CacheManager> {
  const layout = rootLayout(options.root);
  try {
    await makeDirectories(layout.store);
  } catch (err) {
    throw new KilnError(ERROR_CODES.CACHE_STORE, `cannot create kiln's root at ${layout.root}: ${(err as Error).message}`, { cause: err });
  }
  const owned = options.store === undefined;
  const store = options.store ?? (await openStore(layout.store));
  try {
    const name = await chooseSnapshotter(options.snapshotter ?? 'auto', store, layout.tmp);
    const logger = options.logger;
    const snapshotter = await openSnapshotter(name, { root: layout.root, store, ...(logger === undefined ? {} : { logger }) });
    const manager = new Manager({ store, owned, snapshotter, cacheMounts: new CacheMounts(layout.cacheMounts, store), locks: layout.locks, logger });
    await manager.recover();
    return manager;
  } catch (err) {
    if (owned) await store.close();
    throw err;
  }
}

/** The snapshotter for this root: asked for, remembered, or probed (once per root). */
async function chooseSnapshotter(wanted: SnapshotterName | 'auto', store: Store, tmpDir: string): Promise<SnapshotterName> {
  if (wanted !== 'auto') return wanted;
  const settings = store.durable.table<SnapshotterName>('settings');
  const known = settings.get('snapshotter');
  if (known !== undefined) return known;
  const probed = (await overlaySupported(tmpDir)) ? 'overlayfs' : 'native';
  // Another process may have decided meanwhile; its choice stands.
  return store.durable.write(() => {
    const decided = settings.get('snapshotter');
    if (decided !== undefined) return decided;
    settings.put('snapshotter', probed);
    return probed;
  });
}

class Manager implements CacheManager, RefHost {
  readonly snapshotter: string;
  readonly lease: Lease;
  readonly openRefs = new Set<{ release(): Promise<void> }>();
  readonly #store: Store;
  /** Whether the store is this manager's to close. */
  readonly #ownsStore: boolean;
  readonly #sn: ManagedSnapshotter;
  readonly #logger: Logger | undefined;
  readonly #cacheMounts: CacheMounts;
  /** The root's lock directory (claims). */
  readonly #locks: string;
  readonly #results: KvTable<RootRecord>;
  readonly #refs: KvTable<RefRecord>;
  /** Lookups not yet written to lastUsedAt: kept in memory, written in one transaction later. */
  readonly #touched = new Map<string, number>();
  #closed = false;

  constructor({ store, owned, snapshotter, cacheMounts, locks, logger }: { store: Store; owned: boolean; snapshotter: ManagedSnapshotter; cacheMounts: CacheMounts; locks: string; logger: Logger | undefined }) {
    this.#store = store;
    this.#locks = locks;
    this.#ownsStore = owned;
    this.#sn = snapshotter;
    this.#cacheMounts = cacheMounts;
    this.#logger = logger;
    this.snapshotter = snapshotter.name;
    this.#results = store.durable.table(`results/${snapshotter.name}`);
    this.#refs = store.durable.table(`refs/${snapshotter.name}`);
    this.lease = new Lease(store.volatile, snapshotter.name);
  }

  /** Sweeps what dead processes held; erases their leases only once that is done. */
  async recover(): Promise<void> {
    const dead = deadLeases(this.#store.volatile);
    if (dead.length === 0 && !this.#sn.hasPendingRemovals()) return;
    this.#forgetRefs(await this.#sn.sweep(() => this.#roots()));
    removeLeases(this.#store.volatile, dead);
  }

  // RefHost

  get snapshots(): ManagedSnapshotter {
    return this.#sn;
  }

  newKey(): SnapshotKey {
    return randomBytes(12).toString('hex') as SnapshotKey;
  }

  describe(key: SnapshotKey, description: string): void {
    this.#refs.put(key, { description, createdAt: Date.now() });
  }

  warn(message: string, err: unknown): void {
    this.#logger?.warn({ err }, message);
  }

  // CacheManager

  async newMutable(parent: ResultRef, description: RecordDescription): Promise<MutableRef> {
    let mounts: readonly Mount[] = [];
    const key = await this.#create(async (k) => {
      mounts = await this.#sn.prepare(k, parent?.id);
    });
    return new MutableHandle(this, key, description.description, mounts);
  }

  async merge(inputs: readonly ResultRef[], description: RecordDescription): Promise<ResultRef> {
    const refs = inputs.filter((r) => r !== null);
    if (refs.length === 0) return null;
    if (refs.length === 1) return (refs[0] as ImmutableRef).clone();
    return this.#created(await this.#create((k) => this.#sn.merge(k, refs.map((r) => r.id))), description);
  }

  async diff(lower: ResultRef, upper: ResultRef, description: RecordDescription): Promise<ResultRef> {
    // The changes to scratch are only deletions, which a filesystem does not
    // show: empty. The changes from scratch are the upper itself.
    if (upper === null) return null;
    if (lower === null) return upper.clone();
    if (lower.id === upper.id) return null;
    return this.#created(await this.#create((k) => this.#sn.diff(k, lower.id, upper.id)), description);
  }

  async lookup(key: CacheKey): Promise<readonly ResultRef[] | undefined> {
    this.#assertOpen();
    const record = this.#results.get(key);
    if (record === undefined) return undefined;
    const ids = record.refs.filter((id) => id !== null);
    this.lease.acquire(ids);
    // Held now; if the record is still there, nothing it names can be swept
    // (a sweep that started earlier has already removed it).
    this.#store.durable.refresh();
    const again = this.#results.get(key);
    if (again === undefined || again.refs.length !== record.refs.length || again.refs.some((id, i) => id !== record.refs[i])) {
      ids.forEach((id) => this.lease.release(id));
      return undefined;
    }
    this.#touched.set(key, Date.now());
    return record.refs.map((id) => (id === null ? null : new ImmutableHandle(this, id)));
  }

  async save(key: CacheKey, outputs: readonly ResultRef[], description: RecordDescription): Promise<void> {
    this.#assertOpen();
    const refs = outputs.map((ref) => ref?.id ?? null);
    const now = Date.now();
    // The latest save wins: a rerun (ignoreCache, --no-cache) replaces what
    // the key held, and the snapshots it replaced become garbage for prune
    // once nobody holds them. Two builds that both missed a key both ran it;
    // either result is right.
    this.#store.durable.write(() => {
      // Never a record that names a missing snapshot: a later lookup would
      // hand out a ref to nothing. Checked in the transaction that writes it.
      const missing = refs.find((id) => id !== null && !this.#sn.has(id));
      if (missing !== undefined && missing !== null) {
        throw new KilnError(ERROR_CODES.SNAPSHOT, `the result of ${description.description} was removed before it could be cached (snapshot ${missing}); run the build again`);
      }
      this.#results.put(key, { kind: 'result', refs, description: description.description, createdAt: now, lastUsedAt: now });
    });
  }

  async claim(key: CacheKey, signal: AbortSignal): Promise<HeldClaim> {
    this.#assertOpen();
    await makeDirectories(this.#locks);
    // One lock file per 256th of the key space: the files stay few (they are
    // never removed; removing a lock file someone waits on splits the lock),
    // and an unrelated key sharing a bucket only waits its turn.
    const bucket = key.slice(key.indexOf(':') + 1, key.indexOf(':') + 3);
    const held = await lockFile(`${this.#locks}/claim-${this.snapshotter}-${bucket}`, signal);
    return { [Symbol.asyncDispose]: () => held.release() };
  }

  async cacheMount(options: CacheMountOptions): Promise<CacheMountRef> {
    this.#assertOpen();
    return this.#cacheMounts.acquire(options);
  }

  async cacheMountExists(id: string): Promise<boolean> {
    this.#assertOpen();
    return this.#cacheMounts.exists(id);
  }

  async du(): Promise<readonly UsageRecord[]> {
    this.#assertOpen();
    return usageRecords(await this.#view());
  }

  async prune(options: PruneOptions): Promise<PruneReport> {
    this.#assertOpen();
    const view = await this.#view();
    const before = new Map(usageRecords(view).map((r) => [r.id, r]));
    // Decide on the latest records and holds, and drop them, in one transaction.
    const chosenMounts = this.#store.durable.write(() => {
      const roots = new Map(this.#results.entries());
      const inUse = heldSnapshots(this.#store.volatile, this.snapshotter);
      const chosen = selectPrunable({ ...view, roots, inUse }, options, Date.now());
      for (const key of chosen.results) this.#results.remove(key);
      return chosen.cacheMounts;
    });
    const removedKeys = await this.#sn.sweep(() => this.#roots());
    this.#forgetRefs(removedKeys);
    // A cache mount a build started using since the view was taken is kept.
    const removedMounts = await this.#cacheMounts.remove(chosenMounts);
    const removed = [...removedKeys, ...removedMounts].map((k) => before.get(k)).filter((r) => r !== undefined);
    return { removed, reclaimedBytes: removed.reduce((sum, r) => sum + r.size, 0) };
  }

  async layerIds(): Promise<ReadonlySet<string>> {
    this.#assertOpen();
    const ids = new Set<string>();
    for (const s of await this.#sn.list()) {
      if (s.kind !== 'committed') continue;
      // Another process may remove it meanwhile; then it has no layers.
      const layers = await this.#sn.layers(s.key).catch(() => []);
      for (const layer of layers) ids.add(layer.id);
    }
    return ids;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    await Promise.all([...this.openRefs].map((ref) => ref.release()));
    await this.#cacheMounts.close();
    this.#closed = true;
    this.#flushTouched();
    this.lease.close();
    await this.#sn.close();
    if (this.#ownsStore) await this.#store.close();
  }

  // Internals

  /** Holds a new key, then creates its snapshot with `make`; the hold goes if that fails. */
  async #create(make: (key: SnapshotKey) => Promise<unknown>): Promise<SnapshotKey> {
    this.#assertOpen();
    const key = this.newKey();
    this.lease.acquire([key]);
    try {
      await make(key);
    } catch (err) {
      this.lease.release(key);
      throw err;
    }
    return key;
  }

  #created(key: SnapshotKey, description: RecordDescription): ImmutableRef {
    this.describe(key, description.description);
    return new ImmutableHandle(this, key);
  }

  /** What keeps snapshots alive, read inside the sweep's transaction. */
  #roots(): SnapshotKey[] {
    const roots: SnapshotKey[] = [];
    for (const [, record] of this.#results.entries()) for (const id of record.refs) if (id !== null) roots.push(id);
    roots.push(...heldSnapshots(this.#store.volatile, this.snapshotter));
    return roots;
  }

  #flushTouched(): void {
    if (this.#touched.size === 0) return;
    this.#store.durable.write(() => {
      for (const [key, at] of this.#touched) {
        const record = this.#results.get(key);
        if (record !== undefined && record.lastUsedAt < at) this.#results.put(key, { ...record, lastUsedAt: at });
      }
    });
    this.#touched.clear();
  }

  #forgetRefs(keys: readonly SnapshotKey[]): void {
    if (keys.length > 0) this.#store.durable.write(() => keys.forEach((key) => this.#refs.remove(key)));
  }

  /** The cache as du and prune see it; sizes of committed snapshots are measured once and kept. */
  async #view(): Promise<CacheView> {
    this.#flushTouched();
    const list = await this.#sn.list();
    const limit = pLimit(8);
    const measured = new Map<SnapshotKey, number>();
    const sizes = new Map<SnapshotKey, number>();
    await Promise.all(
      list.map((s) =>
        limit(async () => {
          const cached = s.kind === 'committed' ? this.#refs.get(s.key)?.size : undefined;
          if (cached !== undefined) {
            sizes.set(s.key, cached);
            return;
          }
          // Another process may remove it meanwhile; then it counts nothing.
          const usage = await this.#sn.usage(s.key).catch(() => ({ size: 0 }));
          sizes.set(s.key, usage.size);
          if (s.kind === 'committed') measured.set(s.key, usage.size);
        }),
      ),
    );
    const snapshots = new Map(list.map((s) => [s.key, s]));
    if (measured.size > 0) {
      this.#store.durable.write(() => {
        for (const [key, size] of measured) {
          const record = this.#refs.get(key) ?? { description: '', createdAt: snapshots.get(key)?.createdAt ?? Date.now() };
          this.#refs.put(key, { ...record, size });
        }
      });
    }
    const descriptions = new Map<SnapshotKey, string>();
    for (const s of list) descriptions.set(s.key, this.#refs.get(s.key)?.description ?? '');
    return {
      snapshots,
      roots: new Map(this.#results.entries()),
      inUse: heldSnapshots(this.#store.volatile, this.snapshotter),
      sizes,
      descriptions,
      cacheMounts: await this.#cacheMounts.usage(),
    };
  }

  #assertOpen(): void {
    if (this.#closed) throw new KilnError(ERROR_CODES.INTERNAL, 'the cache manager is closed');
  }
}
