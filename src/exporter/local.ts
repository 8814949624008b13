/**
 * The local exporter: a result's files in a host directory, with modes,
 * owners, symlinks, hardlinks, nanosecond timestamps and xattrs kept.
 *
 * The destination is never seen half-written. The copy goes to a hidden
 * sibling; only when it is complete is the old destination moved aside, the
 * copy renamed into its place and the old one removed. A run killed at any
 * point leaves the destination either as it was or absent (between the two
 * renames), plus siblings the next export to it removes (see staging.ts).
 */
import { lstat, mkdir, realpath, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { ERROR_CODES, KilnError } from '../errors.js';
import { removeStaleStaging, stagingPath } from './staging.js';
import type { ExportOptions } from './types.js';

/**
 * Replaces `destDir` with a copy of `srcDir`: whatever `destDir` held before
 * is gone afterwards, and `destDir` itself takes the mode, owner and times of
 * `srcDir`. Missing parents are created; a symlink at `destDir` is followed,
 * so the export lands where it points.
 */
export async function exportLocal(srcDir: string, destDir: string, options: ExportOptions = {}): Promise<void> {
  const { signal } = options;
  try {
    const dest = await realpath(destDir).catch(() => path.resolve(destDir));
    await mkdir(path.dirname(dest), { recursive: true });
    await removeStaleStaging(dest);
    const previous = await lstat(dest).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    });
    if (previous !== undefined && !previous.isDirectory()) {
      throw new KilnError(ERROR_CODES.OUTPUT, `local output ${destDir} exists and is not a directory: remove it or pick another dest`);
    }

    const tmp = stagingPath(dest, 'tmp');
    const old = previous === undefined ? undefined : stagingPath(dest, 'old');
    try {
      await copyTree(srcDir, tmp, signal);
      if (old !== undefined) await rename(dest, old);
      try {
        await rename(tmp, dest);
      } catch (err) {
        if (old !== undefined) await rename(old, dest);
        throw err;
      }
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw err;
    }
    if (old !== undefined) await rm(old, { recursive: true, force: true });
  } catch (err) {
    if (signal?.aborted === true) throw signal.reason;
    if (err instanceof KilnError) throw err;
    throw new KilnError(ERROR_CODES.OUTPUT, `cannot export ${srcDir} to local output ${destDir}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Copies `src` to the new path `dest` with everything cp's archive mode keeps:
 * modes, owners, ns times, hardlinks within the tree, xattrs, devices.
 * One cp process is about ten times faster than walking the tree from JS
 * with fs/metadata.ts's copyEntry (10,000 files of 20 KB: 0.5 s against
 * 5.6 s), which costs several thread-pool round trips per file.
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
