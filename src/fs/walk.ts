/**
 * A deterministic, symlink-safe walk of a directory tree: the order is the
 * same on every machine (names sorted by their UTF-8 bytes, parents first),
 * which is what content checksums and reproducible copies need.
 *
 * Each directory is read and its entries lstat'ed with synchronous calls:
 * in the page cache each takes a few microseconds, where a promise through
 * libuv's thread pool costs several times that in the main thread alone, and
 * a walk is nothing but such calls (an unchanged context's re-check is one
 * walk). The walk lets the event loop turn every {@link SLICE_MS} so the rest
 * of the process is not held up, and hands its entries out in batches.
 */
import type { BigIntStats, Dirent } from 'node:fs';
import { lstatSync, readdirSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
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

/** The longest the walk (with what its consumer does between batches) holds the main thread. */
const SLICE_MS = 10;
/** Entries per batch at most. */
const BATCH = 256;

/**
 * Whether plain string comparison of these names is their UTF-8 byte order.
 * It is unless a name holds a UTF-16 surrogate or a code unit above it
 * (U+D800 and up), where UTF-16 and UTF-8 orders part ways.
 */
export const NOT_BYTE_ORDERED = /[\uD800-\uFFFF]/;

/** The order of two names by their UTF-8 bytes (as readdir sorts them). */
export function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

function sortByBytes(dirents: Dirent[]): Dirent[] {
  if (dirents.some((d) => NOT_BYTE_ORDERED.test(d.name))) return dirents.sort((a, b) => byteOrder(a.name, b.name));
  return dirents.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** A directory being walked: its wanted entries, listed and stat'ed, and how far the walk is in them. */
interface Frame {
  readonly entries: TreeEntry[];
  /** Whether each entry is selected itself (otherwise it is there to be descended into). */
  readonly selected: boolean[];
  readonly descend: boolean[];
  next: number;
}

/**
 * Lists the directory `dir` (relative path `relDir`), sorted, and lstat's the
 * entries the filter selects or may descend into.
 */
function listDirectory(dir: string, relDir: string, filter: PathFilter | undefined): Frame {
  const frame: Frame = { entries: [], selected: [], descend: [], next: 0 };
  const dirents = sortByBytes(readdirSync(dir, { withFileTypes: true }));
  const hostPrefix = dir.endsWith('/') ? dir : `${dir}/`;
  for (const d of dirents) {
    const rel = relDir === '' ? d.name : `${relDir}/${d.name}`;
    const typedDir = d.isDirectory();
    // readdir's types say what is a directory, so the filter can decide before
    // any stat: only entries it selects (or may descend into) are stat'ed,
    // which keeps a one-file pattern over /usr/bin cheap. Some filesystems
    // report no type (DT_UNKNOWN): those are stat'ed to find out.
    const known = typedDir || d.isFile() || d.isSymbolicLink() || d.isFIFO() || d.isSocket() || d.isCharacterDevice() || d.isBlockDevice();
    const maybeSelected = filter === undefined || filter.matches(rel, typedDir);
    if (!maybeSelected && known && !(typedDir && filter.mayContain(rel))) continue;
    const hostPath = hostPrefix + d.name;
    const stats = lstatSync(hostPath, { bigint: true });
    // A type that changed between readdir and lstat (or was unknown): trust lstat.
    const isDir = stats.isDirectory();
    const selected = isDir === typedDir && known ? maybeSelected : filter === undefined || filter.matches(rel, isDir);
    const descend = isDir && (selected || filter === undefined || filter.mayContain(rel));
    if (!selected && !descend) continue;
    frame.entries.push({ rel, path: hostPath, stats });
    frame.selected.push(selected);
    frame.descend.push(descend);
  }
  return frame;
}

/**
 * lstat-walk of `root` (never follows symlinks), parents before children,
 * names sorted by byte order, root itself not yielded, in batches of at most
 * {@link BATCH} entries (never empty).
 *
 * With a filter, a directory that is not selected itself but leads to
 * something selected is yielded just before the first selected entry below
 * it, and not at all when nothing below it is selected.
 */
export async function* walkTreeBatches(root: string, options: WalkOptions = {}): AsyncGenerator<TreeEntry[]> {
  const { filter, signal } = options;
  signal?.throwIfAborted();
  // Directories entered only because something below them might be selected;
  // they are yielded once something actually is.
  const pending: TreeEntry[] = [];
  // The directory of each frame below the top, to drop it from `pending` when its frame ends.
  const stack: Frame[] = [listDirectory(root, '', filter)];
  const owners: (TreeEntry | undefined)[] = [undefined];
  let batch: TreeEntry[] = [];
  let sliceStart = performance.now();
  while (stack.length > 0) {
    const frame = stack.at(-1)!;
    if (frame.next === frame.entries.length) {
      stack.pop();
      const owner = owners.pop();
      if (owner !== undefined && pending.at(-1) === owner) pending.pop();
      continue;
    }
    const i = frame.next++;
    const entry = frame.entries[i]!;
    if (frame.selected[i] === true) {
      if (pending.length > 0) batch.push(...pending.splice(0));
      batch.push(entry);
    }
    const descend = frame.descend[i] === true;
    if (batch.length >= BATCH || (descend && performance.now() - sliceStart >= SLICE_MS)) {
      if (batch.length > 0) yield batch;
      batch = [];
      // The consumer's work on the batch counts too: let timers and I/O of
      // the rest of the process run between slices.
      if (performance.now() - sliceStart >= SLICE_MS) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        sliceStart = performance.now();
      }
      signal?.throwIfAborted();
    }
    if (descend) {
      if (frame.selected[i] !== true) pending.push(entry);
      stack.push(listDirectory(entry.path, entry.rel, filter));
      owners.push(entry);
    }
  }
  if (batch.length > 0) yield batch;
}

/** {@link walkTreeBatches} one entry at a time. */
export async function* walkTree(root: string, options: WalkOptions = {}): AsyncGenerator<TreeEntry> {
  for await (const batch of walkTreeBatches(root, options)) {
    for (const entry of batch) {
      options.signal?.throwIfAborted();
      yield entry;
    }
  }
}
