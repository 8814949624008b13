/**
 * The native snapshotter: every snapshot is a full copy of its tree, made
 * with `cp -a` (reflinks where the filesystem has them). It needs no mounts,
 * so it works where overlayfs cannot be mounted; it is the slow fallback.
 *
 * To merge with the same meaning as overlay stacks, each snapshot remembers
 * its layers: for a prepared snapshot, its own changes are what tells its
 * tree from its parent's (found by comparing the two when needed); a diff's
 * layer holds the changes themselves plus the paths it deletes.
 */
import { lstat, mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { MountSpec } from './mounting.js';
import {
  StoredSnapshotter,
  stackLayers,
  type Built,
  type Snap,
  type SnapshotterOptions,
} from './stored-snapshotter.js';
import { compareTrees, withAncestors } from './tree-compare.js';
import { copyEntries, copyTree } from './tree-copy.js';
import type { LayerContent } from './types.js';

/** One layer: the changes from tree `base` (none: empty) to tree `path`, and extra deletions. */
export interface NativeLayer {
  /** Relative to the snapshotter's directory. */
  readonly path: string;
  readonly base: string | null;
  /** Paths this layer deletes beyond what comparing `base` and `path` shows (a diff's deletions). */
  readonly deleted: readonly string[];
}

/** Snapshots as full directory copies. */
export class NativeSnapshotter extends StoredSnapshotter<NativeLayer> {
  constructor(options: SnapshotterOptions) {
    super('native', options);
  }

  protected async buildPrepare(id: string, parent: Snap<NativeLayer> | undefined): Promise<Built<NativeLayer>> {
    await this.#newTree(id, parent);
    const own = { path: treeOf(id), base: parent === undefined ? null : treeOf(parent.dir), deleted: [] };
    return { layers: [...(parent?.layers ?? []), own] };
  }

  protected async buildView(id: string, parent: Snap<NativeLayer>): Promise<Built<NativeLayer>> {
    await this.#newTree(id, parent);
    return { layers: parent.layers };
  }

  protected async buildMerge(id: string, parents: readonly Snap<NativeLayer>[]): Promise<Built<NativeLayer>> {
    const layers = stackLayers(parents);
    const first = parents[0];
    // Start from a copy of the first parent when its layers still lead the stack.
    const fromFirst = first !== undefined && first.layers.every((l, i) => layers[i]?.path === l.path);
    await this.#newTree(id, fromFirst ? first : undefined);
    const target = this.abs(treeOf(id));
    for (const layer of layers.slice(fromFirst ? first.layers.length : 0)) await this.#apply(layer, target);
    return { layers };
  }

  protected async buildDiff(
    id: string,
    lower: Snap<NativeLayer> | undefined,
    upper: Snap<NativeLayer>,
  ): Promise<Built<NativeLayer>> {
    await this.#newTree(id, undefined);
    const from = this.abs(treeOf(upper.dir));
    const changes = await compareTrees(lower === undefined ? undefined : this.abs(treeOf(lower.dir)), from);
    await copyEntries(from, this.abs(treeOf(id)), withAncestors(changes.changed));
    return { layers: [{ path: treeOf(id), base: null, deleted: changes.deleted }], parents: [] };
  }

  protected async afterCommit(): Promise<void> {}

  protected layerContent(layer: NativeLayer): LayerContent {
    return {
      kind: 'compare',
      base: layer.base === null ? undefined : this.abs(layer.base),
      tree: this.abs(layer.path),
      deleted: layer.deleted,
    };
  }

  protected mountSpec(snap: Snap<NativeLayer>, writable: boolean): MountSpec {
    return { type: 'bind', source: treeOf(snap.dir), readonly: !writable };
  }

  /** Makes folder `id`'s tree, a copy of `from`'s or empty. */
  async #newTree(id: string, from: Snap<NativeLayer> | undefined): Promise<void> {
    const tree = this.abs(treeOf(id));
    await mkdir(tree);
    if (from !== undefined) await copyTree(this.abs(treeOf(from.dir)), tree);
  }

  /** Applies one layer's changes to the tree `target`. */
  async #apply(layer: NativeLayer, target: string): Promise<void> {
    const src = this.abs(layer.path);
    const changes = await compareTrees(layer.base === null ? undefined : this.abs(layer.base), src);
    for (const rel of [...changes.deleted, ...layer.deleted]) {
      if (await underRealDirs(target, rel)) await rm(path.join(target, rel), { recursive: true, force: true });
    }
    const entries = withAncestors(changes.changed);
    // A directory cannot replace a non-directory in place, nor the reverse.
    // Parents come first, so by the time a path is checked its ancestors in
    // `target` are real directories (a symlink there was replaced).
    for (const rel of entries) {
      const [s, t] = await Promise.all([lstat(path.join(src, rel)), lstat(path.join(target, rel)).catch(() => undefined)]);
      if (t !== undefined && s.isDirectory() !== t.isDirectory()) {
        await rm(path.join(target, rel), { recursive: true, force: true });
      }
    }
    await copyEntries(src, target, entries);
  }
}

function treeOf(dir: string): string {
  return `${dir}/fs`;
}

/** Whether every ancestor of `rel` in `root` is a directory (not a symlink that would lead elsewhere). */
async function underRealDirs(root: string, rel: string): Promise<boolean> {
  const parts = rel.split('/').slice(0, -1);
  for (let i = 1; i <= parts.length; i++) {
    const st = await lstat(path.join(root, ...parts.slice(0, i))).catch(() => undefined);
    if (st === undefined || !st.isDirectory()) return false;
  }
  return true;
}
