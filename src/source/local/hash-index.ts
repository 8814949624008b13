/**
 * The local sources' file-hash index (see ./checksum.ts), kept in a table of
 * kiln's store that this folder owns (`source/local`, handed over by the
 * session). Each entry records when a build last wrote it (a build whose
 * files did not change does not rewrite it); prune drops entries as it
 * drops unused cache records: all of them (no filter, or `--all`), or those
 * older than `--keep-duration`; a prune with only `--keep-storage` keeps
 * them. Losing an entry only costs the next build a full read of that
 * directory.
 */
import { sha256 } from '../../digest.js';
import type { KvTable } from '../../store/store.js';
import { pruneUnused } from '../unused-records.js';
import type { FileHashCache, LocalHashIndex } from './checksum.js';

/** One stored index. */
export interface HashIndexRecord {
  readonly index: LocalHashIndex;
  readonly usedAt: number;
}

/** What prune decides index entries by (a subset of the cache's PruneOptions). */
export interface HashIndexPruneOptions {
  readonly keepDuration?: number;
}

/** The file-hash index over its table. */
export class StoredHashIndex implements FileHashCache {
  readonly #table: KvTable<HashIndexRecord>;

  constructor(table: KvTable<HashIndexRecord>) {
    this.#table = table;
  }

  get(key: string): LocalHashIndex | undefined {
    return this.#table.get(storedKey(key))?.index;
  }

  async put(key: string, index: LocalHashIndex): Promise<void> {
    this.#table.put(storedKey(key), { index, usedAt: Date.now() });
  }

  /** Entries and their sizes (bytes of their records, roughly), for `kiln du`. */
  usage(): { readonly entries: number; readonly size: number } {
    let entries = 0;
    let size = 0;
    for (const [, record] of this.#table.entries()) {
      entries++;
      size += record.index.reduce((n, [rel, identity, hash]) => n + rel.length + identity.length + hash.length, 0);
    }
    return { entries, size };
  }

  /** Removes the entries prune selects; returns how many. */
  prune(options: HashIndexPruneOptions, now: number): number {
    return pruneUnused(this.#table, options, now);
  }
}

/** Keys name a directory, which can be longer than lmdb allows a key to be: stored by hash. */
function storedKey(key: string): string {
  return sha256(key);
}
