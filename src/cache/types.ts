/**
 * The cache manager: refs over snapshots, and the results cache that maps a
 * cache key to the refs an op produced. Refs carry their lifecycle in their
 * types: a MutableRef is work in progress and commits into an ImmutableRef;
 * both must be released exactly once (or disposed with `await using`).
 * Nothing a live ref (in this process or another on the same root) points at
 * is ever pruned.
 */
import type { CacheKey } from '../digest.js';
import type { Mount, MountedDir, SnapshotKey, SnapshotLayer } from '../snapshot/types.js';

/** An immutable result: a committed snapshot, leased while this ref is held. */
export interface ImmutableRef extends AsyncDisposable {
  /** Stable id of the record (the committed snapshot's key). */
  readonly id: SnapshotKey;
  /** Another handle on the same record; each handle is released on its own. */
  clone(): ImmutableRef;
  /** Mounts the content read-only at a temporary directory. */
  mount(): Promise<MountedDir>;
  /** The mounts that present this ref (for executors). */
  mounts(): Promise<readonly Mount[]>;
  /** The snapshot's layers, bottom first (for image export); valid while this ref is held. */
  layers(): Promise<readonly SnapshotLayer[]>;
  release(): Promise<void>;
}

/** Work in progress: a writable snapshot on top of an optional parent. */
export interface MutableRef extends AsyncDisposable {
  readonly id: SnapshotKey;
  /** Mounts the snapshot writable at a temporary directory. */
  mount(): Promise<MountedDir>;
  /** The mounts that present the snapshot writable (for executors): those the snapshotter's prepare() returned, kept. */
  mounts(): Promise<readonly Mount[]>;
  /** Commits and releases this mutable ref; the returned ref must be released by the caller. */
  commit(): Promise<ImmutableRef>;
  /** Discards the work (if not committed) and releases. */
  release(): Promise<void>;
}

/** How concurrent users share a cache mount (the LLB's `cache.sharing`). */
export type CacheMountSharing = 'shared' | 'private' | 'locked';

/** What a cache mount is asked for with. */
export interface CacheMountOptions {
  /** The cache id: builds that name the same id get the same persistent directory. */
  readonly id: string;
  readonly sharing: CacheMountSharing;
  /** Fills the directory the first time it is created (e.g. with the mount's input). */
  readonly seed?: (dir: string) => Promise<void>;
  /** Stops waiting for a `locked` (or pruned) cache; the wait rejects with its reason. */
  readonly signal?: AbortSignal;
}

/** A cache mount's directory, in use until released (then prune may remove it). */
export interface CacheMountRef extends AsyncDisposable {
  /** Host path of the directory, to bind-mount read-write. */
  readonly path: string;
  release(): Promise<void>;
}

/** An op output: a ref, or null for the empty filesystem (scratch). */
export type ResultRef = ImmutableRef | null;

export interface RecordDescription {
  /** What made the record, shown by `kiln du` (e.g. `mkdir /app`). */
  readonly description: string;
}

/** One line of `kiln du`. */
export interface UsageRecord {
  readonly id: string;
  readonly description: string;
  /** Bytes of the record's own layer. */
  readonly size: number;
  readonly createdAt: number;
  readonly lastUsedAt: number;
  /** Held by a running build (this or another process). */
  readonly inUse: boolean;
  /** Kept only as a parent of other records. */
  readonly shared: boolean;
  /**
   * `blob`: a file of the content store; `image`: an image kept by a
   * `type=image` output, whose size is that of its blobs (also listed as
   * blobs); `store`: kiln's record store itself (never reclaimable); `git`:
   * a git source's bare cache repository of one remote.
   */
  readonly kind: 'result' | 'cache-mount' | 'layer' | 'blob' | 'image' | 'store' | 'git';
}

export interface PruneOptions {
  /** Remove every unreferenced record, not only those filters select. */
  readonly all?: boolean;
  /** Keep the most recently used records up to this many bytes. */
  readonly keepStorage?: number;
  /** Keep records used within this many milliseconds. */
  readonly keepDuration?: number;
  /** Results (by cache key) kept whatever the filters say: those a kept build record names (`kiln debug` opens them). */
  readonly keepKeys?: ReadonlySet<string>;
}

export interface PruneReport {
  readonly removed: readonly UsageRecord[];
  readonly reclaimedBytes: number;
}

export interface CacheManager {
  readonly snapshotter: string;
  /** A new mutable ref on top of `parent` (null = empty). */
  newMutable(parent: ResultRef, description: RecordDescription): Promise<MutableRef>;
  /** Layers `inputs` in order (later on top); scratch inputs are skipped; all scratch gives null. */
  merge(inputs: readonly ResultRef[], description: RecordDescription): Promise<ResultRef>;
  /** The changes that turn `lower` into `upper`. */
  diff(lower: ResultRef, upper: ResultRef, description: RecordDescription): Promise<ResultRef>;
  /** The refs stored for a cache key (leased; release each), or undefined on a miss. */
  lookup(key: CacheKey): Promise<readonly ResultRef[] | undefined>;
  /**
   * Records `outputs` as the result of `key`, replacing what the key held
   * (the latest save wins; what it replaced is garbage once released).
   */
  save(key: CacheKey, outputs: readonly ResultRef[], description: RecordDescription): Promise<void>;
  /**
   * Waits for the right, across every process on this root, to make the
   * result of `key`; look it up again once held, since the last holder may
   * have saved it. For work two processes would both do and both keep
   * (an image layer's unpack); released when disposed.
   */
  claim(key: CacheKey, signal: AbortSignal): Promise<HeldClaim>;
  /**
   * The directory of cache mount `options.id`, created (and seeded) on first
   * use; with `locked` sharing, waits until no other user (in any process) holds it.
   */
  cacheMount(options: CacheMountOptions): Promise<CacheMountRef>;
  /** Whether cache mount `id` exists in this root (without making it). */
  cacheMountExists(id: string): Promise<boolean>;
  du(): Promise<readonly UsageRecord[]>;
  /** The ids of the layers of every committed snapshot stored (what keeps layer blobs; see content/collect.ts). */
  layerIds(): Promise<ReadonlySet<string>>;
  prune(options: PruneOptions): Promise<PruneReport>;
  /** Releases leases and closes the store; refs still held are released. */
  close(): Promise<void>;
}

/** A held {@link CacheManager.claim}. */
export type HeldClaim = AsyncDisposable;
