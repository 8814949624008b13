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
import type { FileHashCache, LocalHashIndex, LocalTreeStamp } from './checksum.js';
import type { LocalImportMemory, LocalImportRecord } from './incremental.js';

export type { LocalImportRecord } from './incremental.js';

/** One stored index. */
export interface HashIndexRecord {
  readonly index: LocalHashIndex;
  readonly usedAt: number;
  /** Set on a directory's tree-stamp record (kept beside its index, under its own key; `index` is then empty). */
  readonly stamp?: LocalTreeStamp;
}

/** What prune decides index entries by (a subset of the cache's PruneOptions). */
export interface HashIndexPruneOptions {
  readonly keepDuration?: number;
}

/**
 * The file-hash index over its table, and what each source's last import
 * copied (see incremental.ts) over a second one.
 */
export class StoredHashIndex implements FileHashCache, LocalImportMemory {
  readonly #table: KvTable<HashIndexRecord>;
  readonly #imports: KvTable<LocalImportRecord> | undefined;

  constructor(table: KvTable<HashIndexRecord>, imports?: KvTable<LocalImportRecord>) {
    this.#table = table;
    this.#imports = imports;
  }

  getImport(key: string): LocalImportRecord | undefined {
    return this.#imports?.get(storedKey(key));
  }

  putImport(key: string, record: Omit<LocalImportRecord, 'usedAt'>): void {
    this.#imports?.put(storedKey(key), { ...record, usedAt: Date.now() });
  }

  get(key: string): LocalHashIndex | undefined {
    const index = this.#table.get(storedKey(key))?.index;
    // An index of an older kiln (a record per file) is read as none: the next build rewrites it.
    return typeof index === 'string' ? index : undefined;
  }

  async put(key: string, index: LocalHashIndex): Promise<void> {
    this.#table.put(storedKey(key), { index, usedAt: Date.now() });
  }

  getStamp(key: string): LocalTreeStamp | undefined {
    return this.#table.get(storedKey(`${key}\0stamp`))?.stamp;
  }

  putStamp(key: string, stamp: LocalTreeStamp): void {
    this.#table.put(storedKey(`${key}\0stamp`), { index: '', usedAt: Date.now(), stamp });
  }

  /** Entries and their sizes (bytes of their records, roughly), for `kiln du`. */
  usage(): { readonly entries: number; readonly size: number } {
    let entries = 0;
    let size = 0;
    for (const [, record] of this.#table.entries()) {
      if (record.stamp !== undefined) continue;
      entries++;
      size += typeof record.index === 'string' ? record.index.length : 0;
    }
    return { entries, size };
  }

  /** Removes the entries prune selects; returns how many. */
  prune(options: HashIndexPruneOptions, now: number): number {
    return pruneUnused(this.#table, options, now) + (this.#imports === undefined ? 0 : pruneUnused(this.#imports, options, now));
  }
}

/** Keys name a directory, which can be longer than lmdb allows a key to be: stored by hash. */
function storedKey(key: string): string {
  return sha256(key);
}
