/**
 * What the overlayfs and native snapshotters share: snapshot records in
 * kiln's store, a folder per snapshot, the lifecycle checks, mount tracking
 * and removal. The two differ only in how a snapshot's content is built and
 * presented, which they supply through the abstract `build*`/`mountSpec`
 * methods.
 *
 * Crash safety comes from the order of writes: a snapshot's record is
 * written (as active) before its folder is made, and it becomes committed
 * only once its content is complete. A folder is deleted only after its
 * record is gone and its id is written to the trash table, so an interrupted
 * removal is finished by the next sweep, and no folder is ever left that no
 * record or trash entry names.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { mkdir, rm, rmdir } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../log.js';
import { currentOwner, isOwnerAlive } from '../owner.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import { explainNoSpace } from '../fs/no-space.js';
import { rootLayout } from '../store/layout.js';
import type { KvEnv, KvTable, Store } from '../store/store.js';
import { MountedDirHandle, makeMountpoint, mountOverlay, resolveMount, unmount, type MountSpec } from './mounting.js';
import { diskUsage } from './disk-usage.js';
import type { LayerContent, Mount, MountedDir, SnapshotInfo, SnapshotKey, SnapshotKind, SnapshotLayer, Snapshotter, Usage } from './types.js';

/** A snapshot as stored. `L` is the snapshotter's description of one layer. */
export interface SnapshotRecord<L> {
  readonly kind: SnapshotKind;
  /** A view: active, but never writable. */
  readonly readonly: boolean;
  /** The snapshots this one is built on and needs to exist (kept while it is). */
  readonly parents: readonly SnapshotKey[];
  readonly createdAt: number;
  /** This snapshot's own folder in the snapshotter's directory. */
  readonly dir: string;
  /** The layers whose content it presents, bottom first. */
  readonly layers: readonly L[];
  /**
   * The process that made it (`PID-STARTTIME`), while it is active: an
   * active snapshot is its maker's work in progress, so no sweep removes it
   * while the maker lives, whatever holds another process sees.
   */
  readonly owner?: string;
}

/** A record with its key. */
export type Snap<L> = SnapshotRecord<L> & { readonly key: SnapshotKey };

/** What building a snapshot's content produced. */
export interface Built<L> {
  readonly layers: readonly L[];
  /** Defaults to the snapshots it was built from. */
  readonly parents?: readonly SnapshotKey[];
}

/** Where a snapshotter keeps its data. */
export interface SnapshotterOptions {
  /** kiln's root. */
  readonly root: string;
  readonly store: Store;
  readonly logger?: Logger;
}

/** A snapshotter as the cache manager uses it: the contract plus garbage collection. */
export interface ManagedSnapshotter extends Snapshotter {
  /**
   * Removes every snapshot that is not in `roots()` nor a parent (however
   * deep) of one, and finishes removals a crashed process left. `roots` is
   * called inside the write transaction that decides, so it sees the latest
   * state. Returns the keys removed.
   */
  sweep(roots: () => Iterable<SnapshotKey>): Promise<readonly SnapshotKey[]>;
  /** Whether removals are pending (a process died while removing). */
  hasPendingRemovals(): boolean;
  /** Whether `key` is recorded; synchronous, so a caller's write transaction can check it. */
  has(key: SnapshotKey): boolean;
}

/** Base of kiln's snapshotters; see the module comment. */
export abstract class StoredSnapshotter<L extends { readonly path: string }> implements ManagedSnapshotter {
  readonly name: string;
  /** The snapshotter's directory (ROOT/snapshots/NAME); record paths are relative to it. */
  protected readonly dir: string;
  protected readonly logger: Logger | undefined;
  readonly #mountsDir: string;
  readonly #env: KvEnv;
  readonly #records: KvTable<SnapshotRecord<L>>;
  /** Folders whose records are gone, to be deleted (value: unused). */
  readonly #trash: KvTable<true>;
  /** Live mounts per snapshot key in this process. */
  readonly #mounted = new Map<SnapshotKey, number>();
  readonly #writable = new Set<SnapshotKey>();
  readonly #handles = new Set<MountedDir>();

  protected constructor(name: string, options: SnapshotterOptions) {
    const layout = rootLayout(options.root);
    this.name = name;
    this.dir = path.join(layout.snapshots, name);
    this.#mountsDir = layout.mounts;
    this.logger = options.logger;
    this.#env = options.store.durable;
    this.#records = this.#env.table(`snapshots/${name}`);
    this.#trash = this.#env.table(`trash/${name}`);
  }

  /** Builds the content of a new active snapshot on `parent` in folder `id`. */
  protected abstract buildPrepare(id: string, parent: Snap<L> | undefined): Promise<Built<L>>;
  /** Builds a read-only view of `parent` in folder `id`. */
  protected abstract buildView(id: string, parent: Snap<L>): Promise<Built<L>>;
  /** Builds `parents` layered in order (later on top) in folder `id`. */
  protected abstract buildMerge(id: string, parents: readonly Snap<L>[]): Promise<Built<L>>;
  /** Builds the changes from `lower` (none: empty) to `upper` in folder `id`. */
  protected abstract buildDiff(id: string, lower: Snap<L> | undefined, upper: Snap<L>): Promise<Built<L>>;
  /** Tidies an active snapshot's folder once it is committed (best effort). */
  protected abstract afterCommit(snap: Snap<L>): Promise<void>;
  /** How to present `snap`, writable or not. */
  protected abstract mountSpec(snap: Snap<L>, writable: boolean): MountSpec;
  /** What one stored layer holds, for exporting it. */
  protected abstract layerContent(layer: L): LayerContent;

  async prepare(key: SnapshotKey, parent?: SnapshotKey): Promise<readonly Mount[]> {
    await this.#create(key, parent === undefined ? [] : [parent], { readonly: false, kind: 'active' }, (id, [p]) =>
      this.buildPrepare(id, p),
    );
    return this.mounts(key);
  }

  async view(key: SnapshotKey, parent: SnapshotKey): Promise<readonly Mount[]> {
    await this.#create(key, [parent], { readonly: true, kind: 'active' }, (id, [p]) =>
      this.buildView(id, p as Snap<L>),
    );
    return this.mounts(key);
  }

  async mounts(key: SnapshotKey): Promise<readonly Mount[]> {
    const snap = this.#get(key);
    return [resolveMount(this.dir, this.mountSpec(snap, isWritable(snap)))];
  }

  async commit(name: SnapshotKey, key: SnapshotKey): Promise<void> {
    this.#assertUnmounted(key, 'commit');
    const committed = this.#env.write(() => {
      const record = this.#record(key);
      if (!isWritable(record)) {
        throw snapshotError(`cannot commit snapshot ${key}: only an active, writable snapshot can be committed`);
      }
      this.#assertFree(name);
      this.#records.remove(key);
      const { owner: _maker, ...rest } = record;
      const done = { ...rest, kind: 'committed' as const };
      this.#records.put(name, done);
      return done;
    });
    await this.afterCommit({ ...committed, key: name }).catch((err: unknown) => {
      this.logger?.warn({ snapshot: name, err }, 'cannot tidy a committed snapshot');
    });
  }

  async merge(name: SnapshotKey, parents: readonly SnapshotKey[]): Promise<void> {
    await this.#create(name, parents, { readonly: false, kind: 'committed' }, (id, ps) => this.buildMerge(id, ps));
  }

  async diff(name: SnapshotKey, lower: SnapshotKey | undefined, upper: SnapshotKey): Promise<void> {
    const inputs = lower === undefined ? [upper] : [lower, upper];
    await this.#create(name, inputs, { readonly: false, kind: 'committed' }, (id, ps) =>
      this.buildDiff(id, lower === undefined ? undefined : ps[0], ps.at(-1) as Snap<L>),
    );
  }

  async mount(key: SnapshotKey, options: { readonly readonly?: boolean } = {}): Promise<MountedDir> {
    const snap = this.#get(key);
    const writable = isWritable(snap) && options.readonly !== true;
    if (writable && this.#writable.has(key)) {
      throw snapshotError(`snapshot ${key} is already mounted writable; release that mount first`);
    }
    return this.mountAs(key, this.mountSpec(snap, writable));
  }

  async layers(key: SnapshotKey): Promise<readonly SnapshotLayer[]> {
    const snap = this.#get(key);
    if (snap.kind !== 'committed') throw new KilnError(ERROR_CODES.SNAPSHOT, `snapshot ${key} is not committed, so it has no layers yet`);
    return snap.layers.map((layer) => ({ id: `${this.name}:${layer.path}`, content: this.layerContent(layer) }));
  }

  async stat(key: SnapshotKey): Promise<SnapshotInfo | undefined> {
    const record = this.#records.get(key);
    return record === undefined ? undefined : toInfo(key, record);
  }

  async usage(key: SnapshotKey): Promise<Usage> {
    return diskUsage(path.join(this.dir, this.#get(key).dir));
  }

  async remove(key: SnapshotKey): Promise<void> {
    this.#assertUnmounted(key, 'remove');
    const dir = this.#env.write(() => {
      const snap = this.#get(key);
      // Only committed snapshots have children: building on one needs it
      // committed (#create), and a commit gives it another key. An active
      // one, which every exec op removes (its root's view), skips reading
      // every record of the store, in the write lock.
      for (const [child, record] of snap.kind === 'active' ? [] : this.#records.entries()) {
        if (record.parents.includes(key)) {
          throw snapshotError(`cannot remove snapshot ${key}: snapshot ${child} is built on it; remove that first`);
        }
      }
      this.#records.remove(key);
      this.#trash.put(snap.dir, true);
      return snap.dir;
    });
    await this.#emptyTrash([dir]);
  }

  async list(): Promise<readonly SnapshotInfo[]> {
    return [...this.#records.entries()].map(([key, record]) => toInfo(key as SnapshotKey, record));
  }

  async sweep(roots: () => Iterable<SnapshotKey>): Promise<readonly SnapshotKey[]> {
    const removed = this.#env.write(() => {
      const all = new Map(this.#records.entries());
      const keep = new Set<string>();
      // Whatever this process has mounted stays, whatever the caller thinks;
      // so does every active snapshot whose maker is still running (it is
      // being built, or is a mutable ref that process will commit or drop).
      const alive = new Map<string, boolean>();
      const makerAlive = (owner: string): boolean => {
        let live = alive.get(owner);
        if (live === undefined) alive.set(owner, (live = isOwnerAlive(owner)));
        return live;
      };
      const working = [...all].filter(([, r]) => r.kind === 'active' && r.owner !== undefined && makerAlive(r.owner)).map(([k]) => k);
      const pending = [...roots(), ...this.#mounted.keys(), ...working];
      for (let key = pending.pop(); key !== undefined; key = pending.pop()) {
        const record = all.get(key);
        if (record === undefined || keep.has(key)) continue;
        keep.add(key);
        pending.push(...record.parents);
      }
      const gone: SnapshotKey[] = [];
      for (const [key, record] of all) {
        if (keep.has(key)) continue;
        this.#records.remove(key);
        this.#trash.put(record.dir, true);
        gone.push(key as SnapshotKey);
      }
      return gone;
    });
    await this.#emptyTrash();
    return removed;
  }

  has(key: SnapshotKey): boolean {
    return this.#records.get(key) !== undefined;
  }

  hasPendingRemovals(): boolean {
    for (const _ of this.#trash.entries()) return true;
    return false;
  }

  async close(): Promise<void> {
    await Promise.all([...this.#handles].map((h) => h.release()));
  }

  /** Makes the snapshotter's directory; called once before use. */
  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
  }

  /**
   * Presents `spec` at a MountedDir: a directory as it is, or an overlay at a
   * fresh mountpoint. `key` (if any) is counted as mounted until release.
   */
  protected async mountAs(key: SnapshotKey | undefined, spec: MountSpec): Promise<MountedDir> {
    const writable = spec.type === 'bind' ? !spec.readonly : spec.upper !== undefined;
    // Counted before mounting, so a concurrent commit or second writable
    // mount of the same snapshot is refused while this one is under way.
    const track = (delta: 1 | -1): void => {
      if (key === undefined) return;
      const count = (this.#mounted.get(key) ?? 0) + delta;
      if (count === 0) this.#mounted.delete(key);
      else this.#mounted.set(key, count);
      if (writable && delta === 1) this.#writable.add(key);
      if (writable && delta === -1) this.#writable.delete(key);
    };
    track(1);
    let target: string;
    let undo: () => Promise<void> = async () => {};
    try {
      if (spec.type === 'bind') {
        target = this.abs(spec.source);
      } else {
        const mountpoint = await makeMountpoint(this.#mountsDir);
        try {
          await mountOverlay(this.dir, spec, mountpoint);
        } catch (err) {
          await rmdir(mountpoint).catch(() => {});
          throw err;
        }
        target = mountpoint;
        undo = () => unmount(mountpoint);
      }
    } catch (err) {
      track(-1);
      throw err;
    }
    const handle: MountedDir = new MountedDirHandle(target, async () => {
      this.#handles.delete(handle);
      try {
        await undo();
      } finally {
        track(-1);
      }
    });
    this.#handles.add(handle);
    return handle;
  }

  /** Absolute path of a path relative to the snapshotter's directory. */
  protected abs(rel: string): string {
    return path.join(this.dir, rel);
  }

  /**
   * Records `key` as active, makes its folder, builds its content, then
   * records it as finished. On failure nothing is left behind.
   */
  async #create(
    key: SnapshotKey,
    inputs: readonly SnapshotKey[],
    what: { readonly readonly: boolean; readonly kind: SnapshotKind },
    build: (id: string, inputs: readonly Snap<L>[]) => Promise<Built<L>>,
  ): Promise<void> {
    // Short ids keep overlay mount options short (see overlayfs.ts).
    const id = randomBytes(8).readBigUInt64BE().toString(36).padStart(13, '0');
    const createdAt = Date.now();
    const base = { readonly: what.readonly, createdAt, dir: id };
    // The inputs are recorded as parents while building, so they cannot be
    // removed under the build.
    const snaps = this.#env.write(() => {
      this.#assertFree(key);
      const found = inputs.map((k) => this.#get(k));
      for (const s of found) {
        if (s.kind !== 'committed') throw snapshotError(`snapshot ${s.key} is not committed; commit it before building on it`);
      }
      this.#records.put(key, { ...base, kind: 'active', parents: inputs, layers: [], owner: currentOwner() });
      return found;
    });
    try {
      mkdirSync(this.abs(id));
    } catch (err) {
      // Never trash a folder this call did not make (an id already taken).
      this.#env.write(() => this.#records.remove(key));
      throw snapshotError(`cannot create snapshot ${key}: ${err instanceof Error ? err.message : String(err)}`, err);
    }
    try {
      const built = await build(id, snaps);
      const made = { ...base, kind: what.kind, parents: built.parents ?? inputs, layers: built.layers };
      this.#records.put(key, what.kind === 'active' ? { ...made, owner: currentOwner() } : made);
    } catch (err) {
      this.#env.write(() => {
        this.#records.remove(key);
        this.#trash.put(id, true);
      });
      await this.#emptyTrash([id]);
      if (err instanceof KilnError) throw err;
      throw snapshotError(`cannot create snapshot ${key}: ${err instanceof Error ? err.message : String(err)}`, err);
    }
  }

  #record(key: SnapshotKey): SnapshotRecord<L> {
    const record = this.#records.get(key);
    if (record === undefined) throw snapshotError(`snapshot ${key} does not exist in the ${this.name} snapshotter`);
    return record;
  }

  #get(key: SnapshotKey): Snap<L> {
    return { ...this.#record(key), key };
  }

  #assertFree(key: SnapshotKey): void {
    if (this.#records.get(key) !== undefined) throw snapshotError(`snapshot ${key} already exists`);
  }

  #assertUnmounted(key: SnapshotKey, action: string): void {
    if (this.#mounted.has(key)) throw snapshotError(`cannot ${action} snapshot ${key}: it is mounted; release the mount first`);
  }

  /** Deletes trashed folders (`ids`, or all), then their trash entries. */
  async #emptyTrash(ids?: readonly string[]): Promise<void> {
    const todo = ids ?? [...this.#trash.entries()].map(([id]) => id);
    const done: string[] = [];
    await Promise.all(
      todo.map(async (id) => {
        try {
          await rm(this.abs(id), { recursive: true, force: true, maxRetries: 3 });
          done.push(id);
        } catch (err) {
          this.logger?.warn({ path: this.abs(id), err }, 'cannot delete a removed snapshot; will retry at the next sweep');
        }
      }),
    );
    if (done.length > 0) this.#env.write(() => done.forEach((id) => this.#trash.remove(id)));
  }
}

/** The layers of `parents` stacked in order; a layer that appears twice keeps only its last place. */
export function stackLayers<L extends { readonly path: string }>(parents: readonly { readonly layers: readonly L[] }[]): L[] {
  const all = parents.flatMap((p) => p.layers);
  const last = new Map(all.map((layer, i) => [layer.path, i]));
  return all.filter((layer, i) => last.get(layer.path) === i);
}

/** A SNAPSHOT error. */
function snapshotError(message: string, cause?: unknown): KilnError {
  // A full disk is named, so the user is not left guessing which one.
  return new KilnError(ERROR_CODES.SNAPSHOT, explainNoSpace(message), cause === undefined ? {} : { cause });
}

function isWritable(snap: SnapshotRecord<unknown>): boolean {
  return snap.kind === 'active' && !snap.readonly;
}

function toInfo(key: SnapshotKey, record: SnapshotRecord<unknown>): SnapshotInfo {
  return { key, kind: record.kind, parents: record.parents, createdAt: record.createdAt };
}
