/**
 * Incremental import of a local source. A source whose files changed since
 * its last import is not copied whole again: its new snapshot is prepared on
 * top of the last import's (copy-on-write on overlayfs: the old files stay in
 * the lower layer, untouched) and only what changed is written into it:
 * changed and added entries copied, deleted ones removed, the directories
 * around them given back their times.
 *
 * What an import copied is remembered as one line per entry, its path and a
 * stat key (device, inode, size, mtime, ctime, mode): an
 * entry whose stat key is the same was not touched since (ctime moves with
 * every write, chmod, chown, xattr or link change, and no user call sets it
 * back), so the old snapshot's copy of it is still right. An entry changed
 * this close to the import is recorded as racy and copied again next time,
 * as the hash index does (see checksum.ts). The lines of the tree as it is
 * now come from the walk that keyed the source, so an update walks nothing
 * again: it compares two logs, then touches only the entries that differ.
 *
 * Hard links are the one thing left to a full import: a change that touches
 * a multiply-linked file falls back to it, so links between names are made
 * exactly as a full copy makes them.
 */
import type { BigIntStats } from 'node:fs';
import { lstat, rm } from 'node:fs/promises';
import path from 'node:path';
import { copyEntry, floorToMicros, setTimes } from '../../fs/metadata.js';
import type { ListedStats } from '../../fs/tree-stamp.js';
import { localSourceError, type LocalSourceLabel } from './selected-entries.js';
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
export const RACY_MARK = ':racy';

/**
 * What tells an entry's copy from a fresh one: `dev:ino:size:mtimeNs:ctimeNs:mode`
 * (the hash index's stat identity too). ctime covers what the others do not:
 * owner, xattrs, link count. atime is left out (hashing reads files).
 */
export function statKey(s: ListedStats): string {
  return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}:${s.mode}`;
}

/** One entry's `path\0statKey\0`, marked racy when its ctime is not before `racyAfterNs`. */
export function importLine(rel: string, stats: ListedStats, racyAfterNs: bigint): string {
  return `${rel}\0${statKey(stats)}${stats.ctimeNs >= racyAfterNs ? RACY_MARK : ''}\0`;
}

/** Collects the `path\0statKey\0` lines of an import. */
export class EntryLog {
  readonly #parts: string[] = [];
  readonly #racyAfterNs = BigInt(Date.now()) * 1_000_000n - RACY_WINDOW_NS;

  add(rel: string, stats: BigIntStats): void {
    this.#parts.push(importLine(rel, stats, this.#racyAfterNs));
  }

  text(): string {
    return this.#parts.join('');
  }
}

/** `[path, statKey]` pairs of a log, in its order. */
function parseLog(log: string): [string, string][] {
  const parts = log.split('\0');
  const pairs: [string, string][] = [];
  for (let i = 0; i + 1 < parts.length; i += 2) pairs.push([parts[i]!, parts[i + 1]!]);
  return pairs;
}

/** Options of {@link updateLocal}. */
export interface UpdateLocalOptions extends LocalSourceLabel {
  readonly signal?: AbortSignal;
  /**
   * `destDir` is the empty upper layer of an overlay whose lower layers hold
   * the previous tree, written without mounting it: an entry's directories
   * are made there as it needs them (overlayfs merges them with the lower
   * ones), and nothing can be removed (that takes a whiteout, which only a
   * mounted overlay makes), so an update that removes anything writes
   * nothing and says `removes`.
   */
  readonly layered?: boolean;
}

/** How much {@link updateLocal} wrote. */
export interface UpdateLocalResult {
  readonly copied: number;
  readonly removed: number;
}

/**
 * Turns `destDir`, which holds the tree that `previous` (an import's log)
 * describes, into the tree that `current` (the log of the walk that keyed
 * the source, see checksumLocal) describes, copying from `dir` only the
 * entries whose lines differ and removing those `current` lacks. Returns
 * null, having written nothing, when a change touches a multiply-linked
 * file or an entry has gone since the walk: a full import must do it.
 *
 * Entries are copied as they are now; the log keeps what the walk saw, so
 * an entry changed again since is copied again by the next import.
 */
export async function updateLocal(
  dir: string,
  destDir: string,
  previous: string,
  current: string,
  options: UpdateLocalOptions = {},
): Promise<UpdateLocalResult | null | 'removes'> {
  const { signal, layered = false } = options;
  const earlier = parseLog(previous);
  const now = parseLog(current);
  // Both logs are in walk order: while their paths pair up, an entry is
  // compared in place, and only the rest (after an entry was added or
  // removed) needs a map.
  let same = 0;
  for (; same < earlier.length && same < now.length && earlier[same]![0] === now[same]![0]; same++);
  const before = new Map(earlier.slice(same));
  const pool = new TaskPool<void>(COPY_CONCURRENCY);
  // The directories (by path) whose content or metadata this writes.
  const retime = new Set<string>();
  // Changed and added entries, in walk order (parents first), with their stats now.
  const writes: { readonly rel: string; readonly stats: BigIntStats; readonly replaces: string | undefined }[] = [];
  try {
    for (let i = 0; i < now.length; i++) {
      const [rel, key] = now[i]!;
      let was: string | undefined;
      if (i < same) was = earlier[i]![1];
      else {
        was = before.get(rel);
        before.delete(rel);
      }
      if (was === key) continue;
      const stats = await lstat(path.join(dir, rel), { bigint: true }).catch(() => undefined);
      if (stats === undefined || (stats.isFile() && stats.nlink > 1n)) return null;
      writes.push({ rel, stats, replaces: was });
    }
    signal?.throwIfAborted();
    // Deleted entries, parents before children: removing a parent takes its children with it.
    const deleted = [...before.keys()].sort();
    if (layered && deleted.length > 0) return 'removes';
    // On an upper layer: the directories made there so far (the layer's root is there).
    const made = new Set<string>(['']);
    const makeParents = async (rel: string): Promise<void> => {
      const missing: string[] = [];
      for (let parent = parentOf(rel); !made.has(parent); parent = parentOf(parent)) missing.push(parent);
      // Top-most first, each as the source has it now: unchanged, that is what the lower layer holds.
      for (const parent of missing.reverse()) {
        const stats = await lstat(path.join(dir, parent), { bigint: true });
        if (!stats.isDirectory()) throw new Error(`${parent} is no longer a directory`);
        await copyEntry(path.join(dir, parent), path.join(destDir, parent), stats);
        made.add(parent);
        retime.add(parent);
      }
    };
    for (const rel of deleted) {
      await rm(path.join(destDir, rel), { recursive: true, force: true });
      retime.add(parentOf(rel));
    }
    for (const { rel, stats, replaces } of writes) {
      pool.throwIfFailed();
      const src = path.join(dir, rel);
      const dest = path.join(destDir, rel);
      retime.add(parentOf(rel));
      if (layered) await makeParents(rel);
      if (stats.isDirectory()) {
        // A directory that was a directory keeps its content; anything else in its place goes.
        if (replaces !== undefined && !isDirectoryKey(replaces) && !layered) await rm(dest, { recursive: true, force: true });
        await copyEntry(src, dest, stats);
        made.add(rel);
        retime.add(rel);
      } else {
        void pool.add(async () => {
          signal?.throwIfAborted();
          // (An upper layer is empty: what the entry replaces is below it, hidden by it.)
          if (replaces !== undefined && !layered) await rm(dest, { recursive: true, force: true });
          await copyEntry(src, dest, stats);
        });
      }
    }
    await pool.drain();
    // Writing in a directory moved its times: give it the source's back, to the microsecond as a full copy does.
    retime.delete('');
    for (const rel of retime) {
      const stats = await lstat(path.join(dir, rel), { bigint: true }).catch(() => undefined);
      if (stats?.isDirectory() === true) await setTimes(path.join(destDir, rel), floorToMicros(stats.atimeNs), floorToMicros(stats.mtimeNs));
    }
    return { copied: writes.length, removed: deleted.length };
  } catch (err) {
    await pool.abandon(err);
    if (signal?.aborted === true) throw signal.reason;
    throw localSourceError(dir, options, `cannot update the previous import: ${(err as Error).message}`, err);
  }
}

/** Whether a stat key is a directory's (its first field is the mode, type bits included). */
function isDirectoryKey(key: string): boolean {
  const fields = (key.endsWith(RACY_MARK) ? key.slice(0, -RACY_MARK.length) : key).split(':');
  const mode = Number(fields.at(-1));
  return (mode & 0o170000) === 0o040000;
}

function parentOf(rel: string): string {
  const slash = rel.lastIndexOf('/');
  return slash < 0 ? '' : rel.slice(0, slash);
}
