/**
 * Copies the selected part of a local directory into a snapshot, keeping
 * modes, owners, times, symlinks, hardlinks and xattrs (see fs/metadata.ts
 * for what exactly is kept, and at what time precision).
 */
import type { BigIntStats } from 'node:fs';
import path from 'node:path';
import { KilnError } from '../../errors.js';
import { copyEntry, setTimes } from '../../fs/metadata.js';
import { type LocalSourceLabel, localSourceError, selectedEntries } from './selected-entries.js';
import type { LocalSelection } from './selection.js';
import { EntryLog } from './incremental.js';
import { TaskPool } from './task-pool.js';

/** Options of {@link copyLocal}. */
export interface CopyLocalOptions extends LocalSourceLabel {
  readonly signal?: AbortSignal;
  /** Entries copied so far. Throttled. */
  readonly onProgress?: (done: number) => void;
}

/** What {@link copyLocal} copied. */
export interface CopyLocalResult {
  /** Entries of every kind (sockets, which are not copied, aside). */
  readonly entries: number;
  /** Bytes of regular files, counting every name of a hardlinked one. */
  readonly bytes: bigint;
  /** What was copied, for the next import to start from (see incremental.ts). */
  readonly log: string;
}

/** Copies running at once: file copies are independent once their directory exists. */
const COPY_CONCURRENCY = 8;

const PROGRESS_INTERVAL_MS = 100;

/**
 * Copies the entries of `dir` that `selection` takes into `destDir`, which
 * must exist and be empty.
 */
export async function copyLocal(dir: string, selection: LocalSelection, destDir: string, options: CopyLocalOptions = {}): Promise<CopyLocalResult> {
  const { signal, onProgress } = options;
  const pool = new TaskPool<void>(COPY_CONCURRENCY);
  // Shared with copyEntry: a multiply-linked file's first copy, which later names link to.
  const hardlinks = new Map<string, string>();
  // The task copying each such file's first name; later names wait for it.
  const firstCopies = new Map<string, Promise<void>>();
  const dirs: [string, BigIntStats][] = [];
  let entries = 0;
  let bytes = 0n;
  let done = 0;
  let reported = 0;
  const log = new EntryLog();

  const copy = async (src: string, dest: string, stats: BigIntStats): Promise<void> => {
    signal?.throwIfAborted();
    try {
      await copyEntry(src, dest, stats, { hardlinks });
    } catch (err) {
      throw localSourceError(dir, options, `cannot copy ${src} to ${dest}: ${(err as Error).message}`, err);
    }
    done++;
    if (onProgress !== undefined && Date.now() - reported >= PROGRESS_INTERVAL_MS) {
      reported = Date.now();
      onProgress(done);
    }
  };

  try {
    for await (const { path: src, rel, stats } of selectedEntries(dir, selection, options)) {
      pool.throwIfFailed();
      if (stats.isSocket()) continue;
      const dest = path.join(destDir, rel);
      log.add(rel, stats);
      entries++;
      if (stats.isFile()) bytes += stats.size;
      if (stats.isDirectory()) {
        // Created before anything below it is queued, so children always find their parent.
        await copy(src, dest, stats);
        dirs.push([dest, stats]);
      } else if (stats.isFile() && stats.nlink > 1n) {
        const inode = `${stats.dev}:${stats.ino}`;
        const first = firstCopies.get(inode);
        const copying = pool.add(async () => {
          await first;
          await copy(src, dest, stats);
        });
        if (first === undefined) firstCopies.set(inode, copying);
      } else {
        void pool.add(() => copy(src, dest, stats)); // failures surface through the pool
      }
    }
    await pool.drain();
    // Filling a directory moved its mtime: put the source's back, to the microsecond as copyEntry does.
    for (const [dest, stats] of dirs) await setTimes(dest, floorToMicros(stats.atimeNs), floorToMicros(stats.mtimeNs));
    onProgress?.(done);
    return { entries, bytes, log: log.text() };
  } catch (err) {
    await pool.abandon(err);
    if (signal?.aborted === true) throw signal.reason;
    if (err instanceof KilnError) throw err;
    throw localSourceError(dir, options, (err as Error).message, err);
  }
}

function floorToMicros(ns: bigint): bigint {
  return ns - (((ns % 1000n) + 1000n) % 1000n);
}
