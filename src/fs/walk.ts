/**
 * A deterministic, symlink-safe walk of a directory tree: the order is the
 * same on every machine (names sorted by their UTF-8 bytes, parents first),
 * which is what content checksums and reproducible copies need.
 */
import type { BigIntStats } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { PathFilter } from './patterns.js';

/** One entry found by {@link walkTree}. */
export interface TreeEntry {
  /** Path relative to the walked root, `/`-separated, no leading slash. */
  readonly rel: string;
  /** Host path of the entry. */
  readonly path: string;
  /** lstat of the entry (a symlink is described, never followed). */
  readonly stats: BigIntStats;
}

/** Options of {@link walkTree}. */
export interface WalkOptions {
  /** Only yield what the filter selects (plus the directories leading to it). */
  readonly filter?: PathFilter;
  readonly signal?: AbortSignal;
}

function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/**
 * lstat-walk of `root` (never follows symlinks), parents before children, names sorted by byte order, root itself not yielded.
 *
 * With a filter, a directory that is not selected itself but leads to
 * something selected is yielded just before the first selected entry below
 * it, and not at all when nothing below it is selected.
 */
export async function* walkTree(root: string, options: WalkOptions = {}): AsyncIterable<TreeEntry> {
  const { filter, signal } = options;
  // Directories entered only because something below them might be selected;
  // they are yielded once something actually is.
  const pending: TreeEntry[] = [];

  async function* visit(dir: string, relDir: string): AsyncGenerator<TreeEntry> {
    signal?.throwIfAborted();
    const dirents = (await fs.readdir(dir, { withFileTypes: true })).sort((a, b) => byteOrder(a.name, b.name));
    // readdir's types say what is a directory, so the filter can decide before
    // any stat: only entries it selects (or may descend into) are stat'ed,
    // which keeps a one-file pattern over /usr/bin cheap.
    const wanted = dirents.map((d) => {
      const rel = relDir === '' ? d.name : `${relDir}/${d.name}`;
      const isDir = d.isDirectory();
      const selected = filter === undefined || filter.matches(rel, isDir);
      // Some filesystems report no type (DT_UNKNOWN): stat those to find out.
      const known = isDir || d.isFile() || d.isSymbolicLink() || d.isFIFO() || d.isSocket() || d.isCharacterDevice() || d.isBlockDevice();
      return { rel, name: d.name, isDir, selected, descend: !known || (isDir && (selected || filter === undefined || filter.mayContain(rel))) };
    });
    // One folder's entries are stat'ed all at once: awaiting them one by one
    // leaves the thread idle, and dominates an unchanged-context rebuild.
    const stats = await Promise.all(wanted.map((w) => (w.selected || w.descend ? fs.lstat(path.join(dir, w.name), { bigint: true }) : Promise.resolve(undefined))));
    for (const [i, w] of wanted.entries()) {
      signal?.throwIfAborted();
      const entryStats = stats[i];
      if (entryStats === undefined) continue;
      const entry: TreeEntry = { rel: w.rel, path: path.join(dir, w.name), stats: entryStats };
      // A type that changed between readdir and lstat: trust lstat.
      const isDir = entryStats.isDirectory();
      const selected = isDir === w.isDir ? w.selected : filter === undefined || filter.matches(entry.rel, isDir);
      if (selected) {
        yield* pending.splice(0);
        yield entry;
      }
      if (!isDir || !(selected || filter?.mayContain(entry.rel) === true)) continue;
      if (!selected) pending.push(entry);
      yield* visit(entry.path, entry.rel);
      if (pending.at(-1) === entry) pending.pop();
    }
  }

  yield* visit(root, '');
}
