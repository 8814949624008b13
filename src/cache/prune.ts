/**
 * The decisions of `du` and `prune`, as pure functions over a view of the
 * cache, so they can be read (and tested) apart from the store.
 */
import type { SnapshotInfo, SnapshotKey } from '../snapshot/types.js';
import type { CacheMountUsage } from './cache-mounts.js';
import type { PruneOptions, UsageRecord } from './types.js';

/**
 * A record that keeps snapshots alive: an op's result. (Cache mounts are
 * plain directories, not snapshots: they are in CacheView.cacheMounts.)
 */
export interface RootRecord {
  readonly kind: 'result';
  readonly refs: readonly (SnapshotKey | null)[];
  readonly description: string;
  readonly createdAt: number;
  readonly lastUsedAt: number;
}

/** What du and prune decide on. */
export interface CacheView {
  readonly snapshots: ReadonlyMap<SnapshotKey, SnapshotInfo>;
  /** Root records by key (a result's cache key). */
  readonly roots: ReadonlyMap<string, RootRecord>;
  /** Snapshots held by a live lease (this process or another). */
  readonly inUse: ReadonlySet<SnapshotKey>;
  /** Bytes of each snapshot's own layer. */
  readonly sizes: ReadonlyMap<SnapshotKey, number>;
  /** What made each snapshot. */
  readonly descriptions: ReadonlyMap<SnapshotKey, string>;
  /** Cache mounts by key. */
  readonly cacheMounts: ReadonlyMap<string, CacheMountUsage>;
}

/** What prune removes: result records (by cache key) and cache mounts (by key). */
export interface PruneSelection {
  readonly results: readonly string[];
  readonly cacheMounts: readonly string[];
}

/** `start` and every parent of them, however deep. */
export function withParents(snapshots: ReadonlyMap<SnapshotKey, SnapshotInfo>, start: Iterable<SnapshotKey>): Set<SnapshotKey> {
  const seen = new Set<SnapshotKey>();
  const pending = [...start];
  for (let key = pending.pop(); key !== undefined; key = pending.pop()) {
    const info = snapshots.get(key);
    if (info === undefined || seen.has(key)) continue;
    seen.add(key);
    pending.push(...info.parents);
  }
  return seen;
}

/** One line per snapshot, then one per cache mount, for `kiln du`. */
export function usageRecords(view: CacheView): UsageRecord[] {
  const direct = new Map<SnapshotKey, { lastUsedAt: number; description: string }>();
  for (const root of view.roots.values()) {
    for (const id of root.refs) {
      if (id === null) continue;
      const seen = direct.get(id);
      direct.set(id, { lastUsedAt: Math.max(seen?.lastUsedAt ?? 0, root.lastUsedAt), description: seen?.description ?? root.description });
    }
  }
  const kept = withParents(view.snapshots, [...direct.keys(), ...view.inUse]);
  const snapshots = [...view.snapshots.values()].map((s): UsageRecord => {
    const root = direct.get(s.key);
    return {
      id: s.key,
      description: view.descriptions.get(s.key) || root?.description || '',
      size: view.sizes.get(s.key) ?? 0,
      createdAt: s.createdAt,
      lastUsedAt: root?.lastUsedAt ?? s.createdAt,
      inUse: view.inUse.has(s.key),
      shared: root === undefined && !view.inUse.has(s.key) && kept.has(s.key),
      kind: root === undefined ? 'layer' : 'result',
    };
  });
  const mounts = [...view.cacheMounts].map(([key, m]): UsageRecord => ({
    id: key,
    description: m.id,
    size: m.size,
    createdAt: m.createdAt,
    lastUsedAt: m.lastUsedAt,
    inUse: m.inUse,
    shared: false,
    kind: 'cache-mount',
  }));
  return [...snapshots, ...mounts];
}

/**
 * The result records and cache mounts prune removes, least recently used
 * first.
 *
 * Nothing in use is removed: a result whose snapshot is in use, a cache
 * mount a build has mounted. Without `all`, a result is also kept while one
 * of its snapshots is a parent of a snapshot in use ("shared" with it):
 * removing it would free nothing now, and the next build likely wants it
 * (buildctl's default keeps shared records too). `all` drops that
 * exception. The filters then narrow the choice: `keepDuration` keeps what
 * was used within it; `keepStorage` stops once what remains (every snapshot
 * still reachable, every cache mount left) fits in that many bytes. With no
 * filter, everything left is removed.
 */
export function selectPrunable(view: CacheView, options: PruneOptions, now: number): PruneSelection {
  const protectedSnapshots = options.all === true ? view.inUse : withParents(view.snapshots, view.inUse);
  const results = [...view.roots]
    .filter(([key]) => options.keepKeys?.has(key) !== true)
    .filter(([, root]) => root.refs.every((id) => id === null || !protectedSnapshots.has(id)))
    .map(([key, root]) => ({ kind: 'result' as const, key, lastUsedAt: root.lastUsedAt }));
  const mounts = [...view.cacheMounts]
    .filter(([, m]) => !m.inUse)
    .map(([key, m]) => ({ kind: 'cache-mount' as const, key, lastUsedAt: m.lastUsedAt }));
  let chosen = [...results, ...mounts]
    .filter((c) => options.keepDuration === undefined || now - c.lastUsedAt > options.keepDuration)
    .sort((a, b) => a.lastUsedAt - b.lastUsedAt);
  if (options.keepStorage !== undefined) {
    const limit = options.keepStorage;
    /** What stays stored once the first `count` chosen are removed: every snapshot still reachable, every cache mount left. */
    const storedWithout = (count: number): number => {
      const gone = new Set(chosen.slice(0, count).map((c) => `${c.kind}\0${c.key}`));
      const live: SnapshotKey[] = [...view.inUse];
      for (const [key, root] of view.roots) {
        if (!gone.has(`result\0${key}`)) for (const id of root.refs) if (id !== null) live.push(id);
      }
      let total = 0;
      for (const key of withParents(view.snapshots, live)) total += view.sizes.get(key) ?? 0;
      for (const [key, m] of view.cacheMounts) if (!gone.has(`cache-mount\0${key}`)) total += m.size;
      return total;
    };
    // The fewest removals (least recently used first) that fit. What stays
    // stored only shrinks as more is removed, so a binary search finds that
    // count with a logarithmic number of reachability walks: one walk per
    // candidate would cost (results x snapshots), minutes on a deep chain.
    let low = 0;
    let high = chosen.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if (storedWithout(mid) <= limit) high = mid;
      else low = mid + 1;
    }
    chosen = chosen.slice(0, low);
  }
  return {
    results: chosen.filter((c) => c.kind === 'result').map((c) => c.key),
    cacheMounts: chosen.filter((c) => c.kind === 'cache-mount').map((c) => c.key),
  };
}
