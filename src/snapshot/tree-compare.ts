/**
 * Comparing two directory trees: which entries of `upper` are new or changed
 * relative to `lower`, and which entries of `lower` are gone. Used to compute
 * a snapshot's own changes where no layer records them (native snapshots,
 * and overlay diffs whose lower is not a base of the upper).
 */
import type { BigIntStats } from 'node:fs';
import { lstatSync, readdirSync } from 'node:fs';
import { open, readlink } from 'node:fs/promises';
import path from 'node:path';

/** What turns one tree into another. Paths are relative, `/`-separated. */
export interface TreeChanges {
  /** Entries of upper that lower lacks or has differently, parents before children. */
  readonly changed: readonly string[];
  /** Entries of lower that upper lacks; a deleted directory is listed alone, not its contents. */
  readonly deleted: readonly string[];
}

/** The changes from `lower` (undefined: an empty tree) to `upper`. */
export async function compareTrees(lower: string | undefined, upper: string): Promise<TreeChanges> {
  const changed: string[] = [];
  const deleted: string[] = [];

  // Listing and lstat are synchronous: microseconds each in the page cache,
  // where a promise per entry through the thread pool costs several times that.
  function addAll(rel: string, stats: BigIntStats): void {
    changed.push(rel);
    if (!stats.isDirectory()) return;
    const dir = path.join(upper, rel);
    for (const name of sortedNames(dir)) addAll(`${rel}/${name}`, lstatSync(`${dir}/${name}`, { bigint: true }));
  }

  async function walk(rel: string): Promise<void> {
    const upperNames = sortedNames(path.join(upper, rel));
    const lowerNames = lower === undefined ? [] : sortedNames(path.join(lower, rel));
    const inUpper = new Set(upperNames);
    const join = (name: string): string => (rel === '' ? name : `${rel}/${name}`);
    for (const name of lowerNames) if (!inUpper.has(name)) deleted.push(join(name));
    const inLower = new Set(lowerNames);
    // Stat and compare a directory's entries together; record them in order.
    const entries = await Promise.all(
      upperNames.map(async (name) => {
        const r = join(name);
        const b = lstatSync(path.join(upper, r), { bigint: true });
        if (lower === undefined || !inLower.has(name)) return { r, b, a: undefined, same: false };
        const a = lstatSync(path.join(lower, r), { bigint: true });
        return { r, b, a, same: await sameEntry(path.join(lower, r), a, path.join(upper, r), b) };
      }),
    );
    for (const { r, a, b, same } of entries) {
      if (a === undefined || a.isDirectory() !== b.isDirectory()) {
        addAll(r, b);
        continue;
      }
      if (!same) changed.push(r);
      if (b.isDirectory()) await walk(r);
    }
  }

  await walk('');
  deleted.sort();
  return { changed, deleted };
}

/** `rels` plus every ancestor directory of each, sorted so parents come first. */
export function withAncestors(rels: Iterable<string>): string[] {
  const all = new Set<string>();
  for (const rel of rels) {
    for (let i = rel.indexOf('/'); i !== -1; i = rel.indexOf('/', i + 1)) all.add(rel.slice(0, i));
    all.add(rel);
  }
  // Sorting by path components keeps every parent before its children.
  return [...all].sort((x, y) => {
    const a = x.split('/');
    const b = y.split('/');
    for (let i = 0; i < Math.min(a.length, b.length); i++) {
      const p = a[i] as string;
      const q = b[i] as string;
      if (p !== q) return p < q ? -1 : 1;
    }
    return a.length - b.length;
  });
}

function sortedNames(dir: string): string[] {
  return readdirSync(dir).sort();
}

/**
 * Whether two entries are the same, as BuildKit's and containerd's differs
 * judge it. Metadata is compared (type, mode, owner, device number, xattrs,
 * link target, and for all but directories size and modification time to
 * the nanosecond). A directory's mtime is not compared: adding and removing
 * an entry (a mount stub, a temporary file) changes it and nothing else, and
 * a directory that holds changes is in a layer anyway as their parent.
 * Contents are read only when a file's mtime has no sub-second part: such
 * times may have been set on purpose (or truncated by a copy or a tar), so
 * equal metadata says little there; otherwise a change of content without a
 * change of nanosecond mtime is not something a build does.
 */
export async function sameEntry(aPath: string, a: BigIntStats, bPath: string, b: BigIntStats): Promise<boolean> {
  if (a.mode !== b.mode || a.uid !== b.uid || a.gid !== b.gid) return false;
  if (!a.isDirectory() && a.mtimeNs !== b.mtimeNs) return false;
  if ((a.isCharacterDevice() || a.isBlockDevice()) && a.rdev !== b.rdev) return false;
  if (a.isSymbolicLink()) return (await readlink(aPath)) === (await readlink(bPath));
  if (a.isFile()) {
    if (a.size !== b.size) return false;
    if (a.mtimeNs % 1_000_000_000n === 0n && !(await sameContent(aPath, bPath))) return false;
  }
  return sameXattrs(aPath, bPath);
}

async function sameContent(aPath: string, bPath: string): Promise<boolean> {
  const [fa, fb] = await Promise.all([open(aPath, 'r'), open(bPath, 'r')]);
  try {
    const bufA = Buffer.alloc(1 << 16);
    const bufB = Buffer.alloc(1 << 16);
    for (;;) {
      const [ra, rb] = await Promise.all([fa.read(bufA, 0, bufA.length), fb.read(bufB, 0, bufB.length)]);
      if (ra.bytesRead !== rb.bytesRead) return false;
      if (ra.bytesRead === 0) return true;
      if (!bufA.subarray(0, ra.bytesRead).equals(bufB.subarray(0, rb.bytesRead))) return false;
    }
  } finally {
    await Promise.all([fa.close(), fb.close()]);
  }
}

/** Overlayfs's own bookkeeping is not content. */
const IGNORED_XATTR = /^trusted\.overlay\./;

/** Loaded on first use: opening a cached build never compares trees. */
let xattr: Promise<typeof import('fs-xattr')> | undefined;

async function sameXattrs(aPath: string, bPath: string): Promise<boolean> {
  xattr ??= import('fs-xattr');
  const { getAttribute } = await xattr;
  const [na, nb] = await Promise.all([xattrNames(aPath), xattrNames(bPath)]);
  if (na.length !== nb.length || na.some((n, i) => n !== nb[i])) return false;
  for (const name of na) {
    const [va, vb] = await Promise.all([getAttribute(aPath, name), getAttribute(bPath, name)]);
    if (!va.equals(vb)) return false;
  }
  return true;
}

async function xattrNames(p: string): Promise<string[]> {
  xattr ??= import('fs-xattr');
  const { listAttributes } = await xattr;
  try {
    return (await listAttributes(p)).filter((n) => !IGNORED_XATTR.test(n)).sort();
  } catch (err) {
    // Filesystems without xattrs have none to compare.
    if ((err as NodeJS.ErrnoException).code === 'ENOTSUP') return [];
    throw err;
  }
}
