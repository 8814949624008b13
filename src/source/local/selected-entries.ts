/**
 * The entries of a local directory that a selection takes: the one walk both
 * the checksum and the copy go through, so they cannot disagree on what the
 * source contains.
 */
import { lstat, readlink, stat } from 'node:fs/promises';
import path from 'node:path';
import { ERROR_CODES, KilnError } from '../../errors.js';
import { createPathFilter, type PathFilter } from '../../fs/patterns.js';
import { type TreeEntry, walkTreeBatches } from '../../fs/walk.js';
import type { LocalSelection } from './selection.js';

/** How a local source is named in errors. */
export interface LocalSourceLabel {
  /** The source's NAME in `local://NAME`, when known. */
  readonly name?: string;
}

/** An error about local directory `dir`, naming the source when its name is known. */
export function localSourceError(dir: string, label: LocalSourceLabel, message: string, cause?: unknown): KilnError {
  const which = label.name === undefined ? `local directory ${dir}` : `local source "${label.name}" (${dir})`;
  return new KilnError(ERROR_CODES.LOCAL_SOURCE, `${which}: ${message}`, cause === undefined ? {} : { cause });
}

/** Options of {@link selectedEntries}. */
export interface SelectedEntriesOptions extends LocalSourceLabel {
  readonly signal?: AbortSignal;
}

/** The entries of `dir` that `selection` takes, sorted, parents before their children. */
export async function* selectedEntries(dir: string, selection: LocalSelection, options: SelectedEntriesOptions = {}): AsyncGenerator<TreeEntry> {
  for await (const batch of selectedEntryBatches(dir, selection, options)) yield* batch;
}

/** {@link selectedEntries} in batches (see walkTreeBatches): one async step per batch, not per entry. */
export async function* selectedEntryBatches(dir: string, selection: LocalSelection, options: SelectedEntriesOptions = {}): AsyncGenerator<TreeEntry[]> {
  yield* filteredEntryBatches(dir, await selectionFilter(dir, selection, options), options);
}

/**
 * The filter of what `selection` takes from `dir` (undefined: everything),
 * after checking that `dir` is a directory.
 */
export async function selectionFilter(dir: string, selection: LocalSelection, options: LocalSourceLabel = {}): Promise<PathFilter | undefined> {
  const info = await stat(dir).catch((err: unknown) => {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    throw localSourceError(dir, options, missing ? 'the directory does not exist' : `cannot read it: ${(err as Error).message}`, err);
  });
  if (!info.isDirectory()) throw localSourceError(dir, options, 'not a directory');

  // As BuildKit does, followed paths and where their links lead join the include patterns.
  const include = new Set(selection.include);
  for (const followPath of selection.followPaths) for (const rel of await linkChain(dir, followPath)) include.add(literalPattern(rel));
  return patternFilter(include, selection.exclude);
}

/**
 * The filter {@link selectionFilter} gives a selection with no followed
 * paths (it reads their links first), made without the directory;
 * undefined: everything. Throws on an invalid pattern.
 */
export function patternSelectionFilter(selection: Pick<LocalSelection, 'include' | 'exclude'>): PathFilter | undefined {
  return patternFilter(new Set(selection.include), selection.exclude);
}

function patternFilter(include: ReadonlySet<string>, exclude: readonly string[]): PathFilter | undefined {
  return include.size === 0 && exclude.length === 0 ? undefined : createPathFilter({ include: [...include], exclude });
}

/** The entries of `dir` that `filter` (from {@link selectionFilter}) takes, in batches. */
export async function* filteredEntryBatches(dir: string, filter: PathFilter | undefined, options: SelectedEntriesOptions = {}): AsyncGenerator<TreeEntry[]> {
  const { signal } = options;
  try {
    yield* walkTreeBatches(dir, { ...(filter === undefined ? {} : { filter }), ...(signal === undefined ? {} : { signal }) });
  } catch (err) {
    if (signal?.aborted === true || err instanceof KilnError) throw err;
    throw localSourceError(dir, options, (err as Error).message, err);
  }
}

/** Links followed before giving up, as Linux does (ELOOP after 40). */
const MAX_LINK_HOPS = 40;

/**
 * `rel`, each symlink met while resolving it inside `root`, and where it ends
 * up. Resolution is confined to `root`: absolute targets start at `root`
 * and `..` stops there, so a followed link never reaches outside the source.
 */
async function linkChain(root: string, rel: string): Promise<string[]> {
  const chain = [rel];
  let pending = rel.split('/');
  let resolved: string[] = [];
  for (let hops = 0; pending.length > 0; ) {
    const part = pending.shift() ?? '';
    if (part === '' || part === '.') continue;
    if (part === '..') {
      resolved.pop();
      continue;
    }
    const candidate = [...resolved, part].join('/');
    const info = await lstat(path.join(root, candidate)).catch(() => undefined);
    // A missing path selects nothing more; the walk reports nothing for it either.
    if (info === undefined) return chain;
    if (!info.isSymbolicLink()) {
      resolved.push(part);
      continue;
    }
    if (++hops > MAX_LINK_HOPS) return chain;
    chain.push(candidate);
    const target = await readlink(path.join(root, candidate));
    if (target.startsWith('/')) resolved = [];
    pending = [...target.split('/'), ...pending];
  }
  if (resolved.length > 0) chain.push(resolved.join('/'));
  return chain;
}

/** A pattern that matches exactly `rel`, whatever characters it holds. */
function literalPattern(rel: string): string {
  return rel.replace(/[\\*?[\]]/g, '\\$&');
}
