/**
 * The overlayfs snapshotter. A snapshot is a stack of layer directories:
 * its own layer (the upper while active) on top of its parent's stack.
 * Preparing and committing touch no file of the parent, so they cost the
 * same on a 1 GB parent as on an empty one; merge and most diffs only
 * rearrange stacks. Deletions in a layer are overlayfs whiteouts (0/0
 * character devices) and opaque directories, which a mounted overlay hides.
 */
import { mkdirSync, rmdirSync, rmSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { run } from './command.js';
import { MAX_MOUNT_OPTIONS, overlayOptions, type MountSpec } from './mounting.js';
import {
  StoredSnapshotter,
  stackLayers,
  type Built,
  type Snap,
  type SnapshotterOptions,
} from './stored-snapshotter.js';
import { compareTrees, withAncestors } from './tree-compare.js';
import type { LayerContent } from './types.js';
import { copyTree, copyEntries } from './tree-copy.js';

/** One layer of a stack: a directory, and whether it may hold whiteouts. */
export interface OverlayLayer {
  /** Relative to the snapshotter's directory, e.g. `k3x9a0b1c2d/fs`. */
  readonly path: string;
  readonly whiteouts: boolean;
}

/** An always-empty directory: the content of an empty stack, and a second lower where one is needed. */
const EMPTY = 'empty';

/**
 * Mount options must fit in one page (MAX_MOUNT_OPTIONS); a stack whose
 * options would not is flattened. Layer paths are 16 characters
 * (`<13-char id>/fs`), so about 230 layers fit.
 */

/** Snapshots as overlayfs layer stacks. */
export class OverlaySnapshotter extends StoredSnapshotter<OverlayLayer> {
  constructor(options: SnapshotterOptions) {
    super('overlayfs', options);
  }

  override async init(): Promise<void> {
    await super.init();
    await mkdir(this.abs(EMPTY), { recursive: true });
  }

  protected async buildPrepare(id: string, parent: Snap<OverlayLayer> | undefined): Promise<Built<OverlayLayer>> {
    // Synchronous: two empty directories on every exec op cost less than two thread-pool round trips.
    mkdirSync(this.abs(`${id}/fs`));
    mkdirSync(this.abs(`${id}/work`));
    const lower = await this.#fit(id, parent?.layers ?? [], true);
    // An upper over lower layers gets whiteouts when a lower file is deleted.
    return { layers: [...lower, { path: `${id}/fs`, whiteouts: lower.length > 0 }] };
  }

  protected async buildView(_id: string, parent: Snap<OverlayLayer>): Promise<Built<OverlayLayer>> {
    return { layers: parent.layers };
  }

  protected async buildMerge(id: string, parents: readonly Snap<OverlayLayer>[]): Promise<Built<OverlayLayer>> {
    return { layers: await this.#fit(id, stackLayers(parents), false) };
  }

  protected async buildDiff(
    id: string,
    lower: Snap<OverlayLayer> | undefined,
    upper: Snap<OverlayLayer>,
  ): Promise<Built<OverlayLayer>> {
    const base = lower?.layers ?? [];
    if (base.every((layer, i) => upper.layers[i]?.path === layer.path)) {
      // The upper was built on the lower: its remaining layers are the diff.
      return { layers: upper.layers.slice(base.length), parents: [upper.key] };
    }
    return this.#compareDiff(id, lower as Snap<OverlayLayer>, upper);
  }

  protected async afterCommit(snap: Snap<OverlayLayer>): Promise<void> {
    // The upper is now a layer; overlayfs's work dir is only needed while
    // mounted writable. It holds one empty directory (overlayfs's own
    // `work`): two rmdir calls, synchronous, cost less on every exec op than
    // the thread-pool round trips of an async recursive rm.
    const work = this.abs(`${snap.dir}/work`);
    try {
      rmdirSync(path.join(work, 'work'));
      rmdirSync(work);
    } catch {
      // Something else in it (an index dir, or it was never mounted): the general way.
      rmSync(work, { recursive: true, force: true });
    }
  }

  protected layerContent(layer: OverlayLayer): LayerContent {
    return { kind: 'overlay-dir', dir: this.abs(layer.path) };
  }

  protected mountSpec(snap: Snap<OverlayLayer>, writable: boolean): MountSpec {
    const layers = snap.layers;
    if (writable) {
      const own = layers.at(-1) as OverlayLayer;
      const lower = layers.slice(0, -1);
      if (lower.length === 0) return { type: 'bind', source: own.path, readonly: false };
      return { type: 'overlay', lower: topFirst(lower), upper: { dir: own.path, work: `${snap.dir}/work` } };
    }
    const only = layers[0];
    if (only === undefined) return { type: 'bind', source: EMPTY, readonly: true };
    if (layers.length === 1 && !only.whiteouts) return { type: 'bind', source: only.path, readonly: true };
    // A read-only overlay needs two lowers; the empty one makes a lone layer's whiteouts vanish.
    return { type: 'overlay', lower: layers.length === 1 ? [only.path, EMPTY] : topFirst(layers) };
  }

  /**
   * A diff whose lower is not a base of the upper: compare the two mounted
   * trees and write the changes as a new layer, deletions as whiteouts.
   */
  async #compareDiff(id: string, lower: Snap<OverlayLayer>, upper: Snap<OverlayLayer>): Promise<Built<OverlayLayer>> {
    await using lowerDir = await this.mountAs(undefined, this.mountSpec(lower, false));
    await using upperDir = await this.mountAs(undefined, this.mountSpec(upper, false));
    const changes = await compareTrees(lowerDir.path, upperDir.path);
    const layer = this.abs(`${id}/fs`);
    await mkdir(layer);
    const parentsOfDeleted = changes.deleted.map((rel) => path.posix.dirname(rel)).filter((d) => d !== '.');
    await makeWhiteouts(layer, changes.deleted);
    // After the whiteouts, so the directories get the upper's times back.
    await copyEntries(upperDir.path, layer, withAncestors([...changes.changed, ...parentsOfDeleted]));
    return { layers: [{ path: `${id}/fs`, whiteouts: changes.deleted.length > 0 }], parents: [] };
  }

  /**
   * `layers` as they will be stored, flattened if mounting them (with this
   * snapshot's upper when `withUpper`) would not fit the mount options: the
   * bottom-most layers that fit are mounted read-only and copied into one
   * new layer in this snapshot's folder, until the stack fits.
   */
  async #fit(id: string, layers: readonly OverlayLayer[], withUpper: boolean): Promise<readonly OverlayLayer[]> {
    const upper = { dir: `${id}/fs`, work: `${id}/work` };
    const size = (ls: readonly OverlayLayer[], up: boolean): number =>
      overlayOptions({ type: 'overlay', lower: ls.map((l) => l.path), ...(up ? { upper } : {}) }).join(',').length;
    let stack = layers;
    for (let n = 0; stack.length > 1 && size(stack, withUpper) > MAX_MOUNT_OPTIONS; n++) {
      let k = 2;
      while (k < stack.length && size(stack.slice(0, k + 1), false) <= MAX_MOUNT_OPTIONS) k++;
      const chunk = stack.slice(0, k);
      const flat = `${id}/flat${n}`;
      await mkdir(this.abs(flat));
      {
        await using view = await this.mountAs(undefined, { type: 'overlay', lower: topFirst(chunk) });
        await copyTree(view.path, this.abs(flat));
      }
      // An earlier flattening of this snapshot is now inside the new one.
      for (const l of chunk) if (l.path.startsWith(`${id}/`)) await rm(this.abs(l.path), { recursive: true, force: true });
      stack = [{ path: flat, whiteouts: false }, ...stack.slice(k)];
    }
    return stack;
  }
}

function topFirst(layers: readonly OverlayLayer[]): string[] {
  return layers.map((l) => l.path).reverse();
}

/** Whiteouts (0/0 character devices) at `rels` inside `layer`, with their parent directories. */
async function makeWhiteouts(layer: string, rels: readonly string[]): Promise<void> {
  if (rels.length === 0) return;
  await Promise.all(rels.map((rel) => mkdir(path.join(layer, path.posix.dirname(rel)), { recursive: true })));
  // Node cannot mknod; one shell runs mknod for a batch, instead of a process per path.
  const script = 'for p do mknod -- "$p" c 0 0 || exit 1; done';
  for (let i = 0; i < rels.length; i += 500) {
    await run(`cannot create whiteouts in ${layer}`, { file: 'sh', args: ['-c', script, 'sh', ...rels.slice(i, i + 500)], cwd: layer });
  }
}
