/**
 * The `copy` action: copy a path (or every match of a wildcard) from the
 * source filesystem into the target, following BuildKit's documented
 * behaviour (`cp -a`-like, with its options):
 *
 * - `src` is resolved in the source; its last component is followed only
 *   with followSymlink, otherwise a symlink is copied as a link.
 * - If `dest` exists and is a directory, a file goes into it; a directory
 *   goes into it as `dest/<name>` unless dirCopyContents, which merges the
 *   directory's contents into `dest`. A `dest` ending in `/` means "into
 *   this directory", which is created. Each wildcard match is copied as if
 *   it were the only source, so several files onto a `dest` that is not a
 *   directory leave the last one there (as BuildKit does).
 * - Directories merge with existing ones; a non-directory replaces a
 *   non-directory; a directory against a non-directory (either way) fails
 *   unless alwaysReplaceExistingDestPaths, which removes what is in the way.
 * - Without createDestPath the parent of `dest` must exist; with it, missing
 *   directories are made with the copy's owner and timestamp, and mode 0755,
 *   or the copy's mode when it is given as bits (its permission bits only:
 *   BuildKit gives `COPY --chmod=0640 dir/ /new/dir/` a `/new/dir` of 0640).
 *   A directory made this way to hold a directory's contents, like an
 *   existing one merged into, keeps that metadata but takes the source
 *   directory's times (or the timestamp).
 * - include/exclude patterns select paths relative to the copied directory.
 * - owner, mode and timestamp apply to every copied entry; otherwise the
 *   source's are kept, as are xattrs, symlinks and hardlinks (between the
 *   entries of one wildcard match).
 *
 * Safety: nothing in the source is followed below `src`; in the target every
 * directory written into was checked with lstat (or created) first, so a
 * symlink in the target is replaced or refused, never written through.
 */
import type { BigIntStats } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { OwnerIds } from '../../fs/metadata.js';
import { setTimes } from '../../fs/metadata.js';
import type { PathFilter } from '../../fs/patterns.js';
import { createPathFilter } from '../../fs/patterns.js';
import { resolveInRoot, toRootPath } from '../../fs/safe-path.js';
import { TreeCopier } from '../../fs/tree-copier.js';
import { walkTreeBatches } from '../../fs/walk.js';
import type { CopyAction } from '../../llb/types.js';
import { ERROR_CODES, KilnError } from '../../errors.js';
import { tarArchiveCompression, unpackArchive } from './archive.js';
import { compileCopyMode } from './chmod.js';
import { makeDirs } from './mkdir.js';
import { copyWholeTree } from './whole-tree.js';
import { hasWildcard, resolveWildcards } from './wildcard.js';

/** Where a copy reads and writes. */
export interface CopyContext {
  readonly source: string;
  readonly target: string;
  readonly signal?: AbortSignal | undefined;
}

/** State shared by everything one copy action writes. */
interface Copier {
  readonly target: string;
  readonly action: CopyAction;
  /** Copies files several at a time, and sets directories' times once they are filled. */
  readonly copier: TreeCopier;
  readonly filter: PathFilter | undefined;
  readonly signal: AbortSignal | undefined;
  /** Directories this copy created (within the current match): nothing can be in the way below them. */
  readonly fresh: Set<string>;
  /** No patterns and no owner, mode or timestamp: a directory copied onto nothing can go to `cp -a` whole. */
  readonly plain: boolean;
  readonly roots: readonly string[];
}

async function lstatOrUndefined(p: string): Promise<BigIntStats | undefined> {
  try {
    return await fs.lstat(p, { bigint: true });
  } catch (err) {
    if (err instanceof Error && 'code' in err && (err.code === 'ENOENT' || err.code === 'ENOTDIR')) return undefined;
    throw err;
  }
}

/** Copies one entry to `dest`, dealing first with whatever is already there. */
async function copyOne(c: Copier, src: string, dest: string, stats: BigIntStats): Promise<void> {
  // A directory this copy made holds only what it put there: no need to look.
  const existing = c.fresh.has(path.dirname(dest)) ? undefined : await lstatOrUndefined(dest);
  const isDir = stats.isDirectory();
  if (existing !== undefined && !(isDir && existing.isDirectory())) {
    if (isDir === existing.isDirectory() || c.action.alwaysReplaceExistingDestPaths) {
      await fs.rm(dest, { recursive: true, force: true });
    } else if (isDir) {
      throw new KilnError(
        ERROR_CODES.NOT_A_DIRECTORY,
        `cannot copy a directory onto "${toRootPath(c.target, dest)}": it exists and is not a directory (set alwaysReplaceExistingDestPaths to replace it)`,
      );
    } else {
      throw new KilnError(
        ERROR_CODES.PATH_EXISTS,
        `cannot copy a file onto "${toRootPath(c.target, dest)}": it is a directory (set alwaysReplaceExistingDestPaths to replace it)`,
      );
    }
  }
  if (!isDir) {
    c.copier.addFile(src, dest, stats);
    return;
  }
  await c.copier.addDirectory(src, dest, stats);
  if (existing === undefined || !existing.isDirectory()) c.fresh.add(dest);
}

/**
 * Copies the resolved source `src` to `dest`. An existing directory at
 * `dest` that a directory is copied onto keeps its own owner and mode (it
 * was the destination, not part of the copy) but takes the source's times;
 * deeper ones take all of the source's metadata. Files are queued on the
 * copier, directories made at once: the walk yields parents first.
 */
async function copyTree(c: Copier, src: string, shownAs: string, stats: BigIntStats, dest: string): Promise<void> {
  if (!stats.isDirectory()) {
    await copyOne(c, src, dest, stats);
    return;
  }
  const destStats = await lstatOrUndefined(dest);
  if (c.plain && (await copyWholeTree({ src, stats, dest, destStats, shownAs, roots: c.roots, signal: c.signal }))) return;
  if (destStats?.isDirectory() === true) c.copier.keepDirectoryTimes(dest, stats);
  else await copyOne(c, src, dest, stats);
  const walk = walkTreeBatches(src, { ...(c.filter === undefined ? {} : { filter: c.filter }), ...(c.signal === undefined ? {} : { signal: c.signal }) });
  const destPrefix = dest.endsWith('/') ? dest : `${dest}/`;
  for await (const batch of walk) {
    await c.copier.room();
    for (const entry of batch) await copyOne(c, entry.path, destPrefix + entry.rel, entry.stats);
  }
}

/** The last component of a source path as written (`""` for the root or a trailing `/.`). */
function baseName(p: string): string {
  if (p.endsWith('/.')) return '';
  return path.posix.basename(path.posix.normalize(`/${p}`));
}

/** Runs a `copy` action from `ctx.source` into `ctx.target`; `owner` is already resolved in the target. */
export async function copy(ctx: CopyContext, action: CopyAction, owner: OwnerIds | undefined): Promise<void> {
  const { source, target } = ctx;
  const sources = action.allowWildcard && hasWildcard(action.src) ? await resolveWildcards(source, action.src) : [action.src];
  if (sources.length === 0) {
    if (action.allowEmptyWildcard) return;
    throw new KilnError(ERROR_CODES.PATH_NOT_FOUND, `nothing in the source matches "${action.src}" (set allowEmptyWildcard to allow that)`);
  }

  const mode = action.mode === undefined ? undefined : compileCopyMode(action.mode);
  const hasPatterns = action.includePatterns.length > 0 || action.excludePatterns.length > 0;
  const c: Copier = {
    target,
    action,
    copier: new TreeCopier({
      ...(owner === undefined ? {} : { owner }),
      ...(mode === undefined ? {} : { mode }),
      ...(action.timestamp === undefined ? {} : { timestamp: action.timestamp }),
      signal: ctx.signal,
    }),
    filter: hasPatterns ? createPathFilter({ include: action.includePatterns, exclude: action.excludePatterns }) : undefined,
    signal: ctx.signal,
    fresh: new Set(),
    plain: !hasPatterns && owner === undefined && mode === undefined && action.timestamp === undefined,
    roots: [source, target],
  };
  try {
    await copySources(ctx, c, sources, owner);
  } catch (err) {
    // No copy outlives the op: the ones in flight finish, the queued ones are dropped.
    await c.copier.abandon(err);
    throw err;
  }
}

/** Copies each source path (a match of the wildcard, or `action.src`) in turn. */
async function copySources(ctx: CopyContext, c: Copier, sources: readonly string[], owner: OwnerIds | undefined): Promise<void> {
  const { source, target } = ctx;
  const { action, copier } = c;
  // Directories the copy makes on the way take the copy's mode only when it
  // is bits, and only their permission bits; a chmod expression leaves 0755.
  const dirMode = action.mode?.kind === 'bits' ? action.mode.bits & 0o777 : 0o755;
  const newDirs = { mode: dirMode, parentMode: dirMode, owner };

  // COPY --parents with a plain path as pattern: that path must be there, even though the pattern alone would copy nothing.
  for (const required of action.requiredPaths ?? []) {
    if ((await lstatOrUndefined(await resolveInRoot(source, required, { followFinal: false }))) === undefined) {
      throw new KilnError(ERROR_CODES.PATH_NOT_FOUND, `cannot copy "${action.src}": the required path "${required}" is not in the source`);
    }
  }

  const destHost = await resolveInRoot(target, action.dest);
  if (!action.createDestPath && destHost !== target && (await lstatOrUndefined(path.dirname(destHost))) === undefined) {
    throw new KilnError(
      ERROR_CODES.PATH_NOT_FOUND,
      `cannot copy to "${action.dest}": its parent directory does not exist (set createDestPath to create it)`,
    );
  }
  const intoDir = action.dest.endsWith('/') || action.dest.endsWith('/.');
  const created = await makeDirs(target, intoDir || destHost === target ? destHost : path.dirname(destHost), newDirs);

  for (const src of sources) {
    ctx.signal?.throwIfAborted();
    // Hard links are kept within one match's copy, not across matches (BuildKit
    // copies each match on its own); and the previous match must be in place
    // before this one looks at what is in the way.
    await copier.forgetHardlinks();
    c.fresh.clear();
    const srcHost = await resolveInRoot(source, src, { followFinal: action.followSymlink });
    const stats = await lstatOrUndefined(srcHost);
    if (stats === undefined) throw new KilnError(ERROR_CODES.PATH_NOT_FOUND, `cannot copy "${src}": no such file or directory in the source`);
    // ADD of a local file: a tar archive (the final symlink followed) is unpacked into dest, as a directory.
    if (action.attemptUnpack === true) {
      const archive = await resolveInRoot(source, src);
      const compression = (await lstatOrUndefined(archive))?.isFile() === true ? await tarArchiveCompression(archive) : undefined;
      if (compression !== undefined) {
        created.push(...(await makeDirs(target, destHost, { mode: 0o755, parentMode: 0o755, owner })));
        await unpackArchive({ file: archive, compression, dest: destHost, shownAs: src, owner, signal: ctx.signal });
        continue;
      }
    }
    const destStats = await lstatOrUndefined(destHost);
    const name = baseName(src);
    let to = destHost;
    if (destStats !== undefined && (stats.isDirectory() ? !action.dirCopyContents : destStats.isDirectory())) to = path.join(destHost, name);
    // Where the copy lands must exist: the directory itself when merging a
    // directory's contents into a new one, otherwise its parent.
    if (to !== target) {
      const holder = action.dirCopyContents && stats.isDirectory() && destStats === undefined ? to : path.dirname(to);
      created.push(...(await makeDirs(target, holder, newDirs)));
    }
    await copyTree(c, srcHost, src, stats, to);
  }

  // Filling a directory changes its mtime, so directory times are set last.
  await copier.finish();
  if (action.timestamp !== undefined) for (const dir of created) await setTimes(dir, action.timestamp, action.timestamp);
}
