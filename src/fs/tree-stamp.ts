/**
 * A stamp of a directory tree's metadata: sha256 over what GNU find prints
 * of every entry (path, type, permission bits, owner, device, inode, size,
 * mtime and ctime to the nanosecond, symlink target). Two equal stamps mean
 * no entry was added, removed, renamed, written, chmod'ed, chown'ed or
 * relinked in between (every such change moves a ctime, which no user call
 * sets back), so whatever was worked out from the tree's content then still
 * holds, as long as no entry was changed within a clock tick of the first
 * stamp (the caller checks that, see checksum.ts's racy window).
 *
 * One `find` child does the walk: its lstat calls run in C on the other CPU
 * while this process only feeds its output to sha256, where a walk in
 * JavaScript builds a stats object per entry (about 10 us of main-thread time
 * each). The stamp is local to this machine and this filesystem (inode
 * numbers, readdir order): it only ever says "unchanged", never what a
 * content checksum is.
 */
import { isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';
import { type BigIntStats, constants, lstatSync, readdirSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import type { PathFilter } from './patterns.js';
import { spawnChild } from '../spawner.js';
import { byteOrder, NOT_BYTE_ORDERED } from './walk.js';

/** What find prints per entry; `\0` ends each field (no path holds one). */
const FORMAT = '%y %m %U %G %D:%i:%s:%T@:%C@\\0%P\\0%l\\0';
/** Changes whenever what goes into a stamp changes. */
const STAMP_VERSION = 'kiln-tree-stamp-v1';
/** More top-level directories to skip than this and none are (the argument list stays short). */
const MAX_PRUNED = 512;

/** Options of {@link treeStamp}. */
export interface TreeStampOptions {
  /** The walk's filter: top-level directories it can take nothing from are not walked. */
  readonly filter?: PathFilter;
  /**
   * The filter's include patterns as plain paths (see patterns.ts's
   * literalPaths), when it has no exclude patterns: what it selects is
   * those paths, what is below them and the directories leading to them.
   * While none of them is a directory, the stamp is then taken from the
   * lstat of each of them and of the directories leading to them, in this
   * process: no find lists a whole tree for a few files.
   */
  readonly literal?: readonly string[];
  readonly signal?: AbortSignal;
}

/** `name` as a literal find -path pattern. */
function literal(name: string): string {
  return name.replace(/[\\*?[\]]/g, '\\$&');
}

/** The top-level directories of `root` that `filter` can take nothing from. */
function prunedTopLevel(root: string, filter: PathFilter): string[] {
  const pruned: string[] = [];
  for (const d of readdirSync(root, { withFileTypes: true })) {
    if (d.isDirectory() && !filter.matches(d.name, true) && !filter.mayContain(d.name)) pruned.push(d.name);
  }
  return pruned.sort();
}

/**
 * The stamp of the tree under `root` (hex), or undefined when it cannot be
 * taken (no GNU find, an unreadable directory, a find that failed): the
 * caller then walks the tree itself, which reports what is wrong.
 */
export async function treeStamp(root: string, options: TreeStampOptions = {}): Promise<string | undefined> {
  return (await treeListing(root, options))?.stamp;
}

/** A tree's stamp, and the entries find listed to take it. */
export interface TreeListing {
  readonly stamp: string;
  /**
   * The entries as a walk of the whole tree gives them (walk.ts: sorted by
   * bytes, parents first), read from find's output; undefined when a walk
   * must do it: the stamp was taken with a filter (only whole trees are
   * listed), a name is not UTF-8, a time is before 1970.
   */
  entries(): ListedEntry[] | undefined;
}

/** The lstat facts of a listed entry (the parts of BigIntStats a tree's checksum reads). */
export type ListedStats = Pick<
  BigIntStats,
  'dev' | 'ino' | 'size' | 'mtimeNs' | 'ctimeNs' | 'mode' | 'uid' | 'gid' | 'rdev' | 'isFile' | 'isDirectory' | 'isSymbolicLink' | 'isCharacterDevice' | 'isBlockDevice' | 'isSocket'
>;

/** One entry of a {@link TreeListing}: what walk.ts's TreeEntry holds, with the stats find printed. */
export interface ListedEntry {
  readonly rel: string;
  readonly path: string;
  readonly stats: ListedStats;
  /** A symlink's target, as find read it. */
  readonly target: string;
}

/** A listing begun before it was asked for, and when. */
export interface EarlyListing {
  readonly listing: Promise<TreeListing | undefined>;
  /** When its find started (ns since the epoch): what a change is racy against. */
  readonly startedNs: bigint;
}

/** A filtered listing to begin early: its filter (and plain paths, see TreeStampOptions), and a key naming it (what it was made from). */
export interface EarlySelection {
  readonly key: string;
  readonly filter: PathFilter;
  readonly literal?: readonly string[];
}

/** Listings begun early, by resolved path and selection key, each taken once. */
const early = new Map<string, EarlyListing>();

/** Where a listing of `root` under the selection named `selectionKey` (none: the whole tree) is kept. */
function earlyKey(root: string, selectionKey: string | undefined): string {
  return `${path.resolve(root)}\0${selectionKey ?? ''}`;
}

/**
 * Begins listing the tree under `root` now (the whole of it, or what
 * `selection`'s filter may take), for {@link takeTreeListing} to take later:
 * a CLI knows its local directories long before its build gets to them, and
 * find then runs while the process starts. Failures are the taker's (it gets
 * undefined and walks).
 */
export function beginTreeListing(root: string, selection?: EarlySelection): void {
  const key = earlyKey(root, selection?.key);
  if (early.has(key)) return;
  const startedNs = BigInt(Date.now()) * 1_000_000n;
  const listing = treeListing(root, selection === undefined ? {} : { filter: selection.filter, ...(selection.literal === undefined ? {} : { literal: selection.literal }) }).catch(
    () => undefined,
  );
  early.set(key, { listing, startedNs });
}

/**
 * The listing of the tree under `root` begun by {@link beginTreeListing},
 * once, with the same selection key (none: the whole tree); undefined if
 * none was.
 */
export function takeTreeListing(root: string, selectionKey?: string): EarlyListing | undefined {
  const key = earlyKey(root, selectionKey);
  const taken = early.get(key);
  early.delete(key);
  return taken;
}

/**
 * {@link treeStamp}, keeping find's output so that, when the stamp differs
 * from the last one, the tree need not be walked again to find out what
 * changed.
 */
export async function treeListing(root: string, options: TreeStampOptions = {}): Promise<TreeListing | undefined> {
  const { filter, signal } = options;
  if (options.literal !== undefined && options.literal.length <= MAX_LITERAL) {
    const stamp = literalStamp(root, options.literal);
    if (stamp !== 'walk') return stamp === undefined ? undefined : { stamp, entries: () => undefined };
  }
  let pruned: string[];
  try {
    pruned = filter === undefined ? [] : prunedTopLevel(root, filter);
  } catch {
    return undefined;
  }
  if (pruned.length > MAX_PRUNED) pruned = [];
  const base = root.endsWith('/') ? root.slice(0, -1) : root;
  const prune = pruned.length === 0 ? [] : ['(', ...pruned.flatMap((name, i) => [...(i === 0 ? [] : ['-o']), '-path', `${literal(base)}/${literal(name)}`]), ')', '-prune', '-o'];
  const hash = createHash('sha256').update(`${STAMP_VERSION}\0${root}\0${pruned.join('\0')}\0\0`);
  return new Promise<TreeListing | undefined>((resolve) => {
    // -H: a root that is a symlink to a directory is walked, as readdir does.
    // Lone: in a build whose steps all come from the cache, the listings are
    // the only children, and node's spawn starts them sooner than perl would
    // (with a spawner already running, it goes through that).
    const child = spawnChild({
      lone: true,
      file: 'find',
      args: ['-H', root, '-mindepth', '1', ...prune, '-printf', FORMAT],
      stdin: 'ignore',
      stdout: 'pipe',
      stderr: 'ignore',
      env: { ...process.env, LC_ALL: 'C' },
      ...(signal === undefined ? {} : { signal }),
    });
    const chunks: Buffer[] = [];
    child.stdout?.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      if (filter === undefined) chunks.push(chunk);
    });
    child.on('error', () => resolve(undefined));
    child.on('close', (code) => {
      if (code !== 0) return resolve(undefined);
      resolve({ stamp: hash.digest('hex'), entries: () => (filter === undefined ? listedEntries(base, Buffer.concat(chunks)) : undefined) });
    });
  });
}

/** More plain paths than this and find lists the tree instead (a stat each is cheap, not free). */
const MAX_LITERAL = 64;
/** Changes whenever what goes into a stamp of plain paths changes; never equal to a find stamp. */
const LITERAL_STAMP_VERSION = 'kiln-literal-stamp-v1';

/**
 * The stamp of the plain paths `literal` under `root` (see
 * TreeStampOptions.literal): each path and each directory leading to it,
 * outermost first, with what find prints of an entry (type, mode, owner,
 * device, inode, size, mtime and ctime to the nanosecond, symlink target),
 * or that it is absent. Down a chain it stops at the first entry that is
 * absent or not a directory (a walk does not follow symlinks). 'walk' when
 * a named path is a directory (its whole subtree is selected: find lists
 * it); undefined when one cannot be read.
 */
function literalStamp(root: string, literal: readonly string[]): string | undefined | 'walk' {
  const hash = createHash('sha256').update(`${LITERAL_STAMP_VERSION}\0${root}\0`);
  const seen = new Set<string>();
  try {
    for (const rel of literal) {
      const parts = rel.split('/');
      for (let i = 1; i <= parts.length; i++) {
        const at = parts.slice(0, i).join('/');
        const named = i === parts.length;
        const stats = lstatSync(path.join(root, at), { bigint: true, throwIfNoEntry: false });
        if (!seen.has(at)) {
          seen.add(at);
          hash.update(`${at}\0${stats === undefined ? 'absent' : entryFacts(path.join(root, at), stats)}\0`);
        }
        if (stats?.isDirectory() !== true) break;
        if (named) return 'walk';
      }
    }
  } catch {
    return undefined;
  }
  return hash.digest('hex');
}

/** What find's FORMAT prints of an entry, from its lstat. */
function entryFacts(file: string, s: BigIntStats): string {
  const target = s.isSymbolicLink() ? readlinkSync(file, { encoding: 'buffer' }).toString('latin1') : '';
  return `${s.mode} ${s.uid} ${s.gid} ${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs} ${target}`;
}

/** File type bits of find's `%y` letters. */
const TYPE_BITS: Readonly<Record<string, number>> = {
  f: constants.S_IFREG,
  d: constants.S_IFDIR,
  l: constants.S_IFLNK,
  p: constants.S_IFIFO,
  s: constants.S_IFSOCK,
  c: constants.S_IFCHR,
  b: constants.S_IFBLK,
};

/** The stats of a listed entry: find's fields, typed as lstat gives them. */
class FoundStats implements ListedStats {
  readonly rdev = 0n;
  readonly mode: bigint;
  readonly uid: bigint;
  readonly gid: bigint;
  readonly dev: bigint;
  readonly ino: bigint;
  readonly size: bigint;
  readonly mtimeNs: bigint;
  readonly ctimeNs: bigint;
  constructor(facts: Omit<ListedStats, 'rdev' | `is${string}`>) {
    this.mode = facts.mode;
    this.uid = facts.uid;
    this.gid = facts.gid;
    this.dev = facts.dev;
    this.ino = facts.ino;
    this.size = facts.size;
    this.mtimeNs = facts.mtimeNs;
    this.ctimeNs = facts.ctimeNs;
  }
  #type(): number {
    return Number(this.mode) & constants.S_IFMT;
  }
  isFile(): boolean {
    return this.#type() === constants.S_IFREG;
  }
  isDirectory(): boolean {
    return this.#type() === constants.S_IFDIR;
  }
  isSymbolicLink(): boolean {
    return this.#type() === constants.S_IFLNK;
  }
  isCharacterDevice(): boolean {
    return this.#type() === constants.S_IFCHR;
  }
  isBlockDevice(): boolean {
    return this.#type() === constants.S_IFBLK;
  }
  isSocket(): boolean {
    return this.#type() === constants.S_IFSOCK;
  }
}

/** `%T@`/`%C@` (seconds, a point, ten digits) in nanoseconds; undefined for what it cannot be (before 1970). */
function nanoseconds(text: string): bigint | undefined {
  const point = text.indexOf('.');
  if (point <= 0 || text.startsWith('-')) return undefined;
  return BigInt(text.slice(0, point)) * 1_000_000_000n + BigInt(text.slice(point + 1, point + 10).padEnd(9, '0'));
}

/** Sorts as walk.ts walks: a parent before its children, siblings by the bytes of their names. */
function walkOrder(entries: ListedEntry[]): ListedEntry[] {
  // A '/' read as the lowest character makes a whole path's order the walk's.
  // UTF-16 order is byte order below U+D800, as walk.ts also relies on.
  const keyed = entries.map((e) => ({ e, key: e.rel.replaceAll('/', '\u0000') }));
  const byBytes = keyed.some(({ key }) => NOT_BYTE_ORDERED.test(key));
  keyed.sort(byBytes ? (a, b) => byteOrder(a.key, b.key) : (a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return keyed.map(({ e }) => e);
}


/** The entries of find's output for the whole tree under `base`, or undefined when a walk must list them. */
function listedEntries(base: string, output: Buffer): ListedEntry[] | undefined {
  if (!isUtf8(output)) return undefined;
  const fields = output.toString('utf8').split('\0');
  const entries: ListedEntry[] = [];
  // Each entry is three fields (facts, path, link target); the output ends with a NUL.
  for (let i = 0; i + 2 < fields.length; i += 3) {
    const facts = fields[i]!;
    const rel = fields[i + 1]!;
    const [type, perms, uid, gid, numbers] = facts.split(' ');
    const typeBits = TYPE_BITS[type ?? ''];
    const [dev, ino, size, mtime, ctime] = (numbers ?? '').split(':');
    if (typeBits === undefined || perms === undefined || uid === undefined || gid === undefined || dev === undefined || ino === undefined || size === undefined || mtime === undefined || ctime === undefined) return undefined;
    const mtimeNs = nanoseconds(mtime);
    const ctimeNs = nanoseconds(ctime);
    if (mtimeNs === undefined || ctimeNs === undefined) return undefined;
    const path = `${base}/${rel}`;
    // A device's number is not among find's fields: lstat says it.
    const stats =
      typeBits === constants.S_IFCHR || typeBits === constants.S_IFBLK
        ? lstatSync(path, { bigint: true })
        : new FoundStats({ mode: BigInt(typeBits | parseInt(perms, 8)), uid: BigInt(uid), gid: BigInt(gid), dev: BigInt(dev), ino: BigInt(ino), size: BigInt(size), mtimeNs, ctimeNs });
    entries.push({ rel, path, stats, target: fields[i + 2]! });
  }
  return walkOrder(entries);
}
