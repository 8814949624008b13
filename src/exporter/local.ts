/**
 * The local exporter: a result's files written into a host directory, with
 * modes, owners, symlinks, hardlinks, nanosecond timestamps and xattrs kept.
 *
 * The result is written *into* the destination, as BuildKit's local exporter
 * does: entries of the result are created or replaced, and whatever else the
 * directory holds is left alone. No file is ever seen half-written under its
 * real name: the result is first copied into a hidden staging directory
 * inside the destination (so the moves below stay on one filesystem, also
 * when the destination is a mount point), then each entry is renamed into
 * place. A directory the destination lacks moves in whole, with one rename; a
 * directory it has is merged into, entry by entry. A run killed at any point
 * leaves every file old or new, never a mix, plus its staging directory,
 * which the next export into the same directory removes (see staging.ts).
 */
import type { Stats } from 'node:fs';
import { lstat, mkdir, readdir, realpath, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { ERROR_CODES, KilnError } from '../errors.js';
import { copyEntry, type EntryTimes, setTimesOfMany } from '../fs/metadata.js';
import { holdStaging, releaseStaging, removeStaleStaging, stagingPathIn } from './staging.js';
import type { Exporter, ExportOptions } from './types.js';

/** `type=local,dest=DIR`: the result's files written into DIR. */
export const localExporter: Exporter<'local'> = {
  type: 'local',
  async export(result, output, ctx) {
    await exportLocal(await result.directory(), output.dest, { signal: ctx.signal });
    return {};
  },
};

/**
 * Writes a copy of `srcDir`'s entries into `destDir`: entries of `srcDir`
 * replace those of the same path, other entries of `destDir` stay. Missing
 * parents are created; a symlink at `destDir` is followed, so the export
 * lands in the directory it points to. A `destDir` kiln creates takes the
 * mode, owner and times of `srcDir`; an existing one keeps its own.
 */
export async function exportLocal(srcDir: string, destDir: string, options: ExportOptions = {}): Promise<void> {
  const { signal } = options;
  try {
    const dest = await realpath(destDir).catch(() => path.resolve(destDir));
    const existing = await lstatOrUndefined(dest);
    if (existing !== undefined && !existing.isDirectory()) {
      throw new KilnError(ERROR_CODES.OUTPUT, `local output ${destDir} exists and is not a directory: remove it or pick another dest`);
    }
    if (existing === undefined) await mkdir(dest, { recursive: true });
    await removeStaleStaging(dest);

    const stage = stagingPathIn(dest, 'out');
    holdStaging(stage);
    try {
      await copyTree(srcDir, stage, signal);
      const merged: EntryTimes[] = [];
      await mergeDirectory({ from: stage, to: dest, signal, merged, applyMetadata: existing === undefined });
      // Last: moving entries into a directory changes its mtime.
      await setTimesOfMany(merged, signal);
    } finally {
      await releaseStaging(stage);
    }
  } catch (err) {
    if (signal?.aborted === true) throw signal.reason;
    if (err instanceof KilnError) throw err;
    throw new KilnError(ERROR_CODES.OUTPUT, `cannot export ${srcDir} to local output ${destDir}: ${(err as Error).message}`, { cause: err });
  }
}

interface MergeStep {
  /** A staged directory whose entries move into `to`. */
  readonly from: string;
  /** An existing directory of the destination. */
  readonly to: string;
  readonly signal: AbortSignal | undefined;
  /** Give `to` the staged directory's owner, mode, xattrs and times once its entries are in. */
  readonly applyMetadata: boolean;
  /** Directories given the result's metadata, with the times they still need. */
  readonly merged: EntryTimes[];
}

/**
 * Moves every entry of the staged directory `from` into `to`. Directories
 * present on both sides are merged, depth first; the merged directory takes
 * the result's owner, mode and xattrs, and its times are collected to be set
 * once every move is done.
 */
async function mergeDirectory(step: MergeStep): Promise<void> {
  const { from, to, signal, merged } = step;
  // Taken first: moving entries out of the staged directory changes its times.
  const stats = await lstat(from, { bigint: true });
  // Dirents carry each entry's kind, so placing it needs no stat of its own.
  for (const entry of await readdir(from, { withFileTypes: true })) {
    signal?.throwIfAborted();
    await placeEntry({ from: path.join(from, entry.name), isDirectory: entry.isDirectory(), to: path.join(to, entry.name), signal, merged });
  }
  if (step.applyMetadata) {
    await copyEntry(from, to, stats);
    merged.push({ path: to, atimeNs: stats.atimeNs, mtimeNs: stats.mtimeNs });
  }
}

/** Errors of a rename that lost a race with another export into the same place. */
const RACED = new Set(['EEXIST', 'ENOTEMPTY', 'EISDIR', 'ENOTDIR']);

/**
 * Puts the staged entry `from` at `to`. A file, symlink or node replaces
 * whatever is there in one rename; a directory moves in whole when `to` is
 * absent, is merged into a directory, and replaces anything else. Nothing is
 * followed: a symlink at `to` is replaced, never written through.
 *
 * Other exports may be writing the same paths at the same moment (last
 * writer wins per file), so a rename that finds the place changed since it
 * looked looks again.
 */
async function placeEntry(move: { from: string; isDirectory: boolean; to: string; signal: AbortSignal | undefined; merged: EntryTimes[] }): Promise<void> {
  const { from, isDirectory, to, signal, merged } = move;
  for (let attempt = 0; ; attempt++) {
    const current = await lstatOrUndefined(to);
    if (isDirectory && current?.isDirectory() === true) {
      await mergeDirectory({ from, to, signal, merged, applyMetadata: true });
      return;
    }
    // A change of kind: the result's entry takes the place of what is there.
    if (current !== undefined && (isDirectory || current.isDirectory())) await rm(to, { recursive: true, force: true });
    try {
      await rename(from, to);
      return;
    } catch (err) {
      if (attempt >= 5 || !RACED.has((err as NodeJS.ErrnoException).code ?? '')) throw err;
    }
  }
}

async function lstatOrUndefined(p: string): Promise<Stats | undefined> {
  try {
    return await lstat(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * Copies `src` to the new path `dest` with everything cp's archive mode keeps:
 * modes, owners, ns times, hardlinks within the tree, xattrs, devices.
 * One cp process is much faster than walking the tree from JS with
 * fs/metadata.ts's copyEntry, which costs several thread-pool round trips
 * per file.
 */
async function copyTree(src: string, dest: string, signal: AbortSignal | undefined): Promise<void> {
  const result = await (await loadExeca())('cp', ['-a', '--reflink=auto', '--no-target-directory', '--', src, dest], {
    reject: false,
    stdin: 'ignore',
    ...(signal === undefined ? {} : { cancelSignal: signal }),
  });
  if (signal?.aborted === true) throw signal.reason;
  if (result.failed) {
    const why = result.stderr.trim() || result.shortMessage;
    throw new KilnError(ERROR_CODES.OUTPUT, `copying ${src} failed: ${why}`);
  }
}

/** execa is loaded on first use: importing it costs ~0.1 s that most builds never need. */
async function loadExeca(): Promise<typeof import('execa').execa> {
  return (await import('execa')).execa;
}
