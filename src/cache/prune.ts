/**
 * The decisions of `du` and `prune`, as pure functions over a view of the
 * cache, so they can be read (and tested) apart from the store.
 */
import type { SnapshotInfo, SnapshotKey } from '../snapshot/types.js';
import type { PruneOptions, UsageRecord } from './types.js';

/**
 * A record that keeps snapshots alive. Results are the only kind for now;
 * cache mounts (`kind: 'cache-mount'`) will be kept the same way.
 */
export interface RootRecord {
  readonly kind: 'result' | 'cache-mount';
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

/** One line per snapshot for `kiln du`. */
export function usageRecords(view: CacheView): UsageRecord[] {
  const direct = new Map<SnapshotKey, { kind: RootRecord['kind']; lastUsedAt: number; description: string }>();
  for (const root of view.roots.values()) {
    for (const id of root.refs) {
      if (id === null) continue;
      const seen = direct.get(id);
      direct.set(id, {
        kind: seen?.kind === 'cache-mount' ? 'cache-mount' : root.kind,
        lastUsedAt: Math.max(seen?.lastUsedAt ?? 0, root.lastUsedAt),
        description: seen?.description ?? root.description,
      });
    }
  }
  const kept = withParents(view.snapshots, [...direct.keys(), ...view.inUse]);
  return [...view.snapshots.values()].map((s) => {
    const root = direct.get(s.key);
    return {
      id: s.key,
      description: view.descriptions.get(s.key) || root?.description || '',
      size: view.sizes.get(s.key) ?? 0,
      createdAt: s.createdAt,
      lastUsedAt: root?.lastUsedAt ?? s.createdAt,
      inUse: view.inUse.has(s.key),
      shared: root === undefined && !view.inUse.has(s.key) && kept.has(s.key),
      kind: root?.kind ?? 'layer',
    };
  });
}

/**
 * The result records prune removes, least recently used first.
 *
 * A record is never removed while a snapshot it names is in use. Without
 * `all`, a record is also kept while one of its snapshots is a parent of a
 * snapshot in use ("shared" with it): removing it would free nothing now,
 * and the next build likely wants it (buildctl's default keeps shared
 * records too). `all` drops that exception. The filters then narrow the
 * choice: `keepDuration` keeps records used within it; `keepStorage` stops
 * once what remains (everything still reachable) fits in that many bytes.
 * With no filter, every record left is removed.
 */
export function selectPrunable(view: CacheView, options: PruneOptions, now: number): string[] {
  const protectedSnapshots = options.all === true ? view.inUse : withParents(view.snapshots, view.inUse);
  const candidates = [...view.roots]
    .filter(([, root]) => root.kind === 'result')
    .filter(([, root]) => root.refs.every((id) => id === null || !protectedSnapshots.has(id)))
    .filter(([, root]) => options.keepDuration === undefined || now - root.lastUsedAt > options.keepDuration)
    .sort(([, a], [, b]) => a.lastUsedAt - b.lastUsedAt)
    .map(([key]) => key);
  if (options.keepStorage === undefined) return candidates;
  const remaining = new Map(view.roots);
  const stored = (): number => {
    const live = [...remaining.values()].flatMap((root) => root.refs.filter((id) => id !== null));
    let total = 0;
    for (const key of withParents(view.snapshots, [...live, ...view.inUse])) total += view.sizes.get(key) ?? 0;
    return total;
  };
  const chosen: string[] = [];
  for (const key of candidates) {
    if (stored() <= options.keepStorage) break;
    remaining.delete(key);
    chosen.push(key);
  }
  return chosen;
}
