/**
 * Incremental import of a local source. A source whose files changed since
 * its last import is not copied whole again: its new snapshot is prepared on
 * top of the last import's (copy-on-write on overlayfs: the old files stay in
 * the lower layer, untouched) and only what changed is written into it:
 * changed and added entries copied, deleted ones removed, the directories
 * around them given back their times.
 *
 * What an import copied is remembered as one line per entry, its path and a
 * stat key (type and mode, owner, size, mtime, ctime, inode, device): an
 * entry whose stat key is the same was not touched since (ctime moves with
 * every write, chmod, chown, xattr or link change, and no user call sets it
 * back), so the old snapshot's copy of it is still right. An entry changed
 * this close to the import is recorded as racy and copied again next time,
 * as the hash index does (see checksum.ts).
 *
 * Hard links are the one thing left to a full import: a change that touches
 * a multiply-linked file falls back to it, so links between names are made
 * exactly as a full copy makes them.
 */
import type { BigIntStats } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { copyEntry, floorToMicros, setTimes } from '../../fs/metadata.js';
import { localSourceError, type LocalSourceLabel, selectedEntryBatches } from './selected-entries.js';
import type { LocalSelection } from './selection.js';
import { TaskPool } from './task-pool.js';

/** What one import of a source copied, remembered to make the next one incremental. */
export interface LocalImportRecord {
  /** The cache key the import's snapshot was saved under. */
  readonly key: string;
  /** `path\0statKey\0` for every entry copied, in walk order (see {@link EntryLog}). */
  readonly entries: string;
  /** Incremental imports stacked since the last full one. */
  readonly depth: number;
  readonly usedAt: number;
}

/** Where import records are kept between builds, by a key naming the directory and the selection. */
export interface LocalImportMemory {
  getImport(key: string): LocalImportRecord | undefined;
  putImport(key: string, record: Omit<LocalImportRecord, 'usedAt'>): void;
}

/**
 * Incremental imports stacked on one full import before the next is full
 * again: each adds a layer to the source's snapshot (an image exported
 * straight from the source carries them), and a deep stack costs every later
 * mount a little.
 */
export const MAX_IMPORT_DEPTH = 8;

/** A change made within this of the import's start may share its ctime with a later one (see checksum.ts). */
const RACY_WINDOW_NS = 100_000_000n;

/** Copies running at once. */
const COPY_CONCURRENCY = 8;

/** Ends the stat key of an entry that must be copied again by the next import (no fresh key ends so). */
const RACY = ':racy';

/** Collects the `path\0statKey\0` lines of an import. */
export class EntryLog {
  readonly #parts: string[] = [];
  readonly #racyAfterNs = BigInt(Date.now()) * 1_000_000n - RACY_WINDOW_NS;

  add(rel: string, stats: BigIntStats): void {
    this.#parts.push(`${rel}\0${statKey(stats)}${stats.ctimeNs >= this.#racyAfterNs ? RACY : ''}\0`);
  }

  text(): string {
    return this.#parts.join('');
  }
}

/** What tells an entry's copy from a fresh one: everything but atime (never compared: hashing reads files). */
function statKey(s: BigIntStats): string {
  return `${s.mode}:${s.uid}:${s.gid}:${s.size}:${s.mtimeNs}:${s.ctimeNs}:${s.ino}:${s.dev}:${s.rdev}:${s.nlink}`;
}

function parseEntries(entries: string): Map<string, string> {
  const map = new Map<string, string>();
  const parts = entries.split('\0');
  for (let i = 0; i + 1 < parts.length; i += 2) map.set(parts[i]!, parts[i + 1]!);
  return map;
}

/** Options of {@link updateLocal}. */
export interface UpdateLocalOptions extends LocalSourceLabel {
  readonly signal?: AbortSignal;
}

/** What {@link updateLocal} did: the new entry lines, and how much it wrote; null when a full import is needed. */
export interface UpdateLocalResult {
  readonly entries: string;
  readonly copied: number;
  readonly removed: number;
}

/**
 * Turns `destDir`, which holds the tree that `previous` (an import's entry
 * lines) describes, into a copy of what `selection` takes of `dir` now,
 * writing only what differs. Returns null, having written nothing, when a
 * change touches a multiply-linked file (a full import must make the links).
 */
export async function updateLocal(dir: string, selection: LocalSelection, destDir: string, previous: string, options: UpdateLocalOptions = {}): Promise<UpdateLocalResult | null> {
  const { signal } = options;
  const before = parseEntries(previous);
  const log = new EntryLog();
  const pool = new TaskPool<void>(COPY_CONCURRENCY);
  // The directories (by path) whose content or metadata this writes, and each directory's stats now.
  const retime = new Set<string>();
  const dirStats = new Map<string, BigIntStats>();
  // Changed and added entries, in walk order (parents first); applied after the walk, once it is known that no hard link is involved.
  const writes: { readonly rel: string; readonly stats: BigIntStats; readonly replaces: string | undefined }[] = [];
  try {
    for await (const batch of selectedEntryBatches(dir, selection, options)) {
      for (const { rel, stats } of batch) {
        if (stats.isSocket()) continue;
        log.add(rel, stats);
        if (stats.isDirectory()) dirStats.set(rel, stats);
        const was = before.get(rel);
        before.delete(rel);
        if (was === statKey(stats)) continue;
        if (stats.isFile() && stats.nlink > 1n) return null;
        writes.push({ rel, stats, replaces: was });
      }
    }
    signal?.throwIfAborted();
    // Deleted entries, parents before children: removing a parent takes its children with it.
    const deleted = [...before.keys()].sort();
    for (const rel of deleted) {
      await rm(path.join(destDir, rel), { recursive: true, force: true });
      retime.add(parentOf(rel));
    }
    for (const { rel, stats, replaces } of writes) {
      pool.throwIfFailed();
      const src = path.join(dir, rel);
      const dest = path.join(destDir, rel);
      retime.add(parentOf(rel));
      if (stats.isDirectory()) {
        // A directory that was a directory keeps its content; anything else in its place goes.
        if (replaces !== undefined && !isDirectoryKey(replaces)) await rm(dest, { recursive: true, force: true });
        await copyEntry(src, dest, stats);
        retime.add(rel);
      } else {
        void pool.add(async () => {
          signal?.throwIfAborted();
          if (replaces !== undefined) await rm(dest, { recursive: true, force: true });
          await copyEntry(src, dest, stats);
        });
      }
    }
    await pool.drain();
    // Writing in a directory moved its times: give it the source's back, to the microsecond as a full copy does.
    for (const rel of retime) {
      const stats = dirStats.get(rel);
      if (stats !== undefined) await setTimes(path.join(destDir, rel), floorToMicros(stats.atimeNs), floorToMicros(stats.mtimeNs));
    }
    return { entries: log.text(), copied: writes.length, removed: deleted.length };
  } catch (err) {
    await pool.abandon(err);
    if (signal?.aborted === true) throw signal.reason;
    throw localSourceError(dir, options, `cannot update the previous import: ${(err as Error).message}`, err);
  }
}

/** Whether a stat key is a directory's (its first field is the mode, type bits included). */
function isDirectoryKey(key: string): boolean {
  const mode = Number(key.slice(0, key.indexOf(':')));
  return (mode & 0o170000) === 0o040000;
}

function parentOf(rel: string): string {
  const slash = rel.lastIndexOf('/');
  return slash < 0 ? '' : rel.slice(0, slash);
}
