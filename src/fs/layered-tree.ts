/**
 * Reading a root filesystem without mounting it. An exec op's root is
 * mounted by the runtime inside the container (that saves kiln a `mount`
 * and an `umount` per op), yet kiln must still look into it first: the
 * user's entry in /etc/passwd, which mount points are missing. The tree the
 * mount will present is found the way overlayfs finds it: the top-most
 * layer holding a name wins, a whiteout (a 0/0 character device) hides the
 * layers below, a directory merges with the directories below it down to an
 * opaque one (`trusted.overlay.opaque=y`) or to a non-directory.
 */
import { lstatSync, type Stats } from 'node:fs';
import { readlink } from 'node:fs/promises';
import path from 'node:path';
import { type ResolveOptions, resolveInTree, type TreeAccess } from './safe-path.js';

/** One entry of the tree: where it lives on the host. */
export interface TreeEntry {
  readonly hostPath: string;
  readonly stats: Stats;
}

/** Loaded on first use: only layers with directories below them are ever asked. */
let xattr: Promise<typeof import('fs-xattr')> | undefined;

/** The tree a stack of layer directories presents. */
export class LayeredTree implements TreeAccess {
  /** Top-most first. */
  readonly layers: readonly string[];
  /** Where the tree's changes are written: overlayfs's upper directory, or the one directory. */
  readonly writable: string | undefined;
  readonly #overlay: boolean;

  private constructor(layers: readonly string[], writable: string | undefined, overlay: boolean) {
    this.layers = layers;
    this.writable = writable;
    this.#overlay = overlay;
  }

  /** A plain directory (no whiteouts: a 0/0 device in it is a device). */
  static ofDirectory(dir: string): LayeredTree {
    return new LayeredTree([dir], dir, false);
  }

  /**
   * The tree an overlay mount presents: its `lower` layers (top-most first),
   * and its `upper`, when there is one, as the top layer that takes the
   * writes. Shaped like snapshot's OverlayMount, which fs does not import.
   */
  static ofOverlay(overlay: { readonly lower: readonly string[]; readonly upper?: { readonly dir: string } }): LayeredTree {
    const upper = overlay.upper?.dir;
    return new LayeredTree(upper === undefined ? overlay.lower : [upper, ...overlay.lower], upper, true);
  }

  /** The entry at `parts` (resolved components: no symlink but possibly the last), or undefined. */
  async entry(parts: readonly string[]): Promise<TreeEntry | undefined> {
    if (parts.length === 0) {
      const top = this.layers[0];
      const stats = top === undefined ? undefined : statOf(top);
      return top === undefined || stats === undefined ? undefined : { hostPath: top, stats };
    }
    let dirs = this.layers;
    for (const [i, name] of parts.entries()) {
      const last = i === parts.length - 1;
      // Only a directory on the way needs the layers below it.
      const found = await this.child(dirs, name, !last);
      if (found === undefined) return undefined;
      if (last) return found;
      if (!found.stats.isDirectory()) return undefined;
      dirs = found.dirs;
    }
    return undefined;
  }

  /**
   * The entry `name` of the directory that `dirs` (the host paths of one
   * directory in each layer that merges into it, top-most first) present,
   * or undefined. With `withDirs`, a directory comes with the same list of
   * its own: the layers' directories of that name down to an opaque one, a
   * whiteout or a non-directory.
   */
  async child(dirs: readonly string[], name: string, withDirs = true): Promise<(TreeEntry & { readonly dirs: readonly string[] }) | undefined> {
    let top: TreeEntry | undefined;
    const merged: string[] = [];
    for (const [j, dir] of dirs.entries()) {
      const hostPath = path.join(dir, name);
      const stats = statOf(hostPath);
      if (stats === undefined) continue;
      if (this.#overlay && stats.isCharacterDevice() && stats.rdev === 0) break;
      if (top === undefined) {
        top = { hostPath, stats };
        if (!withDirs || !stats.isDirectory()) break;
      } else if (!stats.isDirectory()) break;
      merged.push(hostPath);
      if (this.#overlay && j < dirs.length - 1 && (await isOpaque(hostPath))) break;
    }
    return top === undefined ? undefined : { ...top, dirs: merged };
  }

  /** An overlay's layers below its upper, as a tree; undefined for a plain directory or an overlay without an upper. */
  lower(): LayeredTree | undefined {
    return this.#overlay && this.writable !== undefined ? new LayeredTree(this.layers.slice(1), undefined, true) : undefined;
  }

  async lstat(parts: readonly string[]): Promise<Stats | undefined> {
    return (await this.entry(parts))?.stats;
  }

  async readlink(parts: readonly string[]): Promise<string> {
    const found = await this.entry(parts);
    if (found === undefined) throw Object.assign(new Error(`no such entry /${parts.join('/')}`), { code: 'ENOENT' });
    return readlink(found.hostPath);
  }

  /** The components `p` resolves to inside the tree (see resolveInRoot). */
  resolve(p: string, options: ResolveOptions = {}): Promise<string[]> {
    return resolveInTree(this, p, options);
  }

  /** Where `p` (symlinks followed inside the tree) lives on the host, or undefined if it does not exist. */
  async find(p: string): Promise<TreeEntry | undefined> {
    return this.entry(await this.resolve(p));
  }
}

/** lstat (synchronous: one quick metadata call), undefined for a missing entry (or one under a non-directory). */
export function statOf(hostPath: string): Stats | undefined {
  try {
    return lstatSync(hostPath, { throwIfNoEntry: false });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw err;
  }
}

async function isOpaque(dir: string): Promise<boolean> {
  xattr ??= import('fs-xattr');
  const { getAttribute } = await xattr;
  try {
    return (await getAttribute(dir, 'trusted.overlay.opaque')).toString() === 'y';
  } catch {
    // ENODATA: not opaque; ENOTSUP: a filesystem without xattrs has no opaque directories.
    return false;
  }
}
