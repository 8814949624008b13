/**
 * What overlayfs copied up but the process left as it was. Creating a mount
 * stub in /etc copies /etc up; `ln /bin/perl /bin/perl-too` copies perl up
 * (splitting it from its other names in the layers below); a file opened
 * for writing and left alone is copied up too. None of that is the
 * process's work, and BuildKit's layers hold none of it: its differ skips
 * an upper entry that matches the one below. Here the upper directory
 * itself is pruned before it is committed, so the snapshot, its layer, a
 * diff op and every exported image agree: an unchanged copy goes (the
 * entry below shows through again, hardlinks and all), and a directory
 * goes when nothing is left in it and it matches the one below but for its
 * mtime. Whiteouts, opaque and redirected directories, and everything new
 * stay.
 */
import { type BigIntStats, lstatSync, readdirSync, rmdirSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import type { LayeredTree } from '../../fs/layered-tree.js';
import { sameEntry } from '../../snapshot/tree-compare.js';

/** Loaded on first use: most runs copy no directory up. */
let xattr: Promise<typeof import('fs-xattr')> | undefined;

/** Overlayfs's marks that give a directory a meaning beyond its entries. */
const MEANINGFUL_MARKS = ['trusted.overlay.opaque', 'trusted.overlay.redirect'];

async function hasMeaningfulMark(dir: string): Promise<boolean> {
  xattr ??= import('fs-xattr');
  const { listAttributes } = await xattr;
  try {
    return (await listAttributes(dir)).some((name) => MEANINGFUL_MARKS.includes(name));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOTSUP') return false;
    throw err;
  }
}

function isWhiteout(stats: BigIntStats): boolean {
  return stats.isCharacterDevice() && stats.rdev === 0n;
}

/**
 * Prunes the entries of upper directory `dir` that match those of the
 * lower directory merged from `lowerDirs`; returns whether `dir` is empty
 * after that. A name no lower directory lists is new and costs no stat (a
 * process that installs packages writes thousands of them); a new
 * directory is not walked: all of it is new.
 */
async function pruneDir(lower: LayeredTree, dir: string, lowerDirs: readonly string[]): Promise<boolean> {
  const names = readdirSync(dir);
  const below = lowerDirs.map((d) => new Set(readdirSync(d)));
  let left = names.length;
  for (const name of names) {
    if (!below.some((listed) => listed.has(name))) continue;
    const hostPath = path.join(dir, name);
    const stats = lstatSync(hostPath, { bigint: true });
    if (isWhiteout(stats)) continue;
    const under = await lower.child(lowerDirs, name);
    if (under === undefined) continue;
    const underStats = lstatSync(under.hostPath, { bigint: true });
    if (stats.isDirectory()) {
      if (!underStats.isDirectory() || (await hasMeaningfulMark(hostPath))) continue;
      const empty = await pruneDir(lower, hostPath, under.dirs);
      if (!empty || !(await sameEntry(under.hostPath, underStats, hostPath, stats))) continue;
      rmdirSync(hostPath);
    } else {
      if (underStats.isDirectory() || !(await sameEntry(under.hostPath, underStats, hostPath, stats))) continue;
      unlinkSync(hostPath);
    }
    left--;
  }
  return left === 0;
}

/**
 * Removes from the upper directory of `tree` (an overlay whose upper a
 * process has written, unmounted now) every entry that is the same as in
 * the layers below it. A plain directory is left alone: its changes are
 * found by comparing trees, which skips such entries already.
 */
export async function dropUnchangedCopies(tree: LayeredTree): Promise<void> {
  const lower = tree.lower();
  if (lower === undefined || tree.writable === undefined || lower.layers.length === 0) return;
  await pruneDir(lower, tree.writable, lower.layers);
}
