/**
 * The snapshotter contract, shaped like containerd's: snapshots are named by
 * key; an active snapshot is prepared on top of committed parents, mounted,
 * changed, then committed under a new name (becoming immutable). kiln adds two
 * things containerd lacks: several parents (merge) and a view of only the
 * layers between two snapshots (diff).
 */

/** The key of a snapshot in a snapshotter. Branded to keep it apart from cache keys. */
export type SnapshotKey = string & { readonly __brand: 'SnapshotKey' };

/**
 * A bind of a host directory (or file). Containers get it recursively
 * (`rbind`); `readonly` is applied to the whole tree.
 */
export interface BindMount {
  readonly type: 'bind';
  readonly source: string;
  readonly readonly: boolean;
}

/**
 * An overlay of layer directories: `lower` top-most first, as overlayfs
 * stacks them, and with `upper` (its `work` dir beside it) writable.
 * Without an upper it is read-only and needs two lowers at least.
 */
export interface OverlayMount {
  readonly type: 'overlay';
  readonly lower: readonly string[];
  readonly upper?: { readonly dir: string; readonly work: string };
}

/** A fresh tmpfs, `nosuid`, `nodev`, mode 1777; `size` in bytes (absent: the kernel's default, half the memory). */
export interface TmpfsMount {
  readonly type: 'tmpfs';
  readonly size?: number;
}

/**
 * A mount, as structure. It is turned into strings only at the edges:
 * `overlayOptions` (snapshot/mounting.ts) for mount(2), `renderMount`
 * (executor/oci-spec.ts) for an OCI spec or a containerd shim.
 */
export type Mount = BindMount | OverlayMount | TmpfsMount;

export type SnapshotKind = 'active' | 'committed';

export interface SnapshotInfo {
  readonly key: SnapshotKey;
  readonly kind: SnapshotKind;
  /** Bottom-most first; a merge snapshot has several. */
  readonly parents: readonly SnapshotKey[];
  readonly createdAt: number;
}

export interface Usage {
  /** Bytes used by this snapshot's own layer (not its parents'). */
  readonly size: number;
  readonly inodes: number;
}

/** A mounted snapshot: a host directory, released (unmounted) exactly once. */
export interface MountedDir extends AsyncDisposable {
  readonly path: string;
  release(): Promise<void>;
}

/**
 * What one layer of a snapshot holds: the changes over the layers below it,
 * which an image exporter turns into a layer tar.
 */
export type LayerContent =
  /** A directory of changes as overlayfs keeps them: deletions are 0/0 character devices, opaque directories carry `trusted.overlay.opaque=y`. */
  | { readonly kind: 'overlay-dir'; readonly dir: string }
  /** The changes that turn tree `base` (none: empty) into tree `tree`, plus the paths in `deleted`. */
  | { readonly kind: 'compare'; readonly base: string | undefined; readonly tree: string; readonly deleted: readonly string[] };

/** One layer of a committed snapshot. */
export interface SnapshotLayer {
  /** Stable while the layer exists, and never reused for other content (for caching its exported blob). */
  readonly id: string;
  readonly content: LayerContent;
}

export interface Snapshotter {
  /** `overlayfs` or `native`. */
  readonly name: string;
  /** Creates an active (writable) snapshot on top of `parent` (none = empty). O(1) in the parent's size on overlayfs. */
  prepare(key: SnapshotKey, parent?: SnapshotKey): Promise<readonly Mount[]>;
  /** Creates an active read-only snapshot of `parent`. */
  view(key: SnapshotKey, parent: SnapshotKey): Promise<readonly Mount[]>;
  /** The mounts of an existing snapshot (active: writable; committed: read-only). */
  mounts(key: SnapshotKey): Promise<readonly Mount[]>;
  /** Turns active snapshot `key` into committed snapshot `name`. */
  commit(name: SnapshotKey, key: SnapshotKey): Promise<void>;
  /** A committed snapshot whose content is `parents` layered in order (later on top). */
  merge(name: SnapshotKey, parents: readonly SnapshotKey[]): Promise<void>;
  /**
   * A committed snapshot holding the changes that turn `lower` into `upper`
   * (lower undefined = upper's whole content), deletions kept as whiteouts.
   */
  diff(name: SnapshotKey, lower: SnapshotKey | undefined, upper: SnapshotKey): Promise<void>;
  /** Mounts a snapshot at a private temporary directory. */
  mount(key: SnapshotKey, options?: { readonly readonly?: boolean }): Promise<MountedDir>;
  stat(key: SnapshotKey): Promise<SnapshotInfo | undefined>;
  /** The layers a committed snapshot presents, bottom first; their paths stay valid while the snapshot exists. */
  layers(key: SnapshotKey): Promise<readonly SnapshotLayer[]>;
  usage(key: SnapshotKey): Promise<Usage>;
  /** Removes a snapshot; fails if another snapshot has it as a parent. */
  remove(key: SnapshotKey): Promise<void>;
  list(): Promise<readonly SnapshotInfo[]>;
  close(): Promise<void>;
}
