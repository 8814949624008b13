/**
 * What sources remember between builds (the local hash index, HTTP
 * validators) is dropped by prune the way unused cache records are: every
 * entry (no filter, or `--all`), or those not used within `--keep-duration`.
 */
import type { KvTable } from '../store/store.js';

/** What prune decides remembered entries by (a subset of the cache's PruneOptions). */
export interface UnusedPruneOptions {
  readonly keepDuration?: number;
}

/** Removes the entries of `table` that prune selects, by their `usedAt`; returns how many. */
export function pruneUnused(table: KvTable<{ readonly usedAt: number }>, options: UnusedPruneOptions, now: number): number {
  let removed = 0;
  for (const [key, record] of [...table.entries()]) {
    if (options.keepDuration !== undefined && now - record.usedAt <= options.keepDuration) continue;
    table.remove(key);
    removed++;
  }
  return removed;
}
