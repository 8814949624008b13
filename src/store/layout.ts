/**
 * Where things live under kiln's root. The layout is described for users in
 * src/cache/manager.ts; this is the one place that spells the paths.
 */
import path from 'node:path';

/** The directories of one kiln root. */
export interface RootLayout {
  readonly root: string;
  /** lmdb environments (durable records, per-boot leases). */
  readonly store: string;
  /** One folder per snapshotter, each holding one folder per snapshot. */
  readonly snapshots: string;
  /** Temporary mountpoints, `OWNER-RANDOM`. */
  readonly mounts: string;
  /** Scratch space, entries named `OWNER-...`. */
  readonly tmp: string;
  /** Where older versions kept executors' state (bundles): now on a tmpfs (executor/runtime-dir.ts); only cleaned up. */
  readonly executors: string;
  /** Cache mounts' directories, one folder per cache id (outside every snapshotter). */
  readonly cacheMounts: string;
  /** The content store's blobs (layers, configs, manifests), one file per sha256 hex digest. */
  readonly blobs: string;
}

/** The layout of the root at `root` (made absolute). */
export function rootLayout(root: string): RootLayout {
  const abs = path.resolve(root);
  return {
    root: abs,
    store: path.join(abs, 'store'),
    snapshots: path.join(abs, 'snapshots'),
    mounts: path.join(abs, 'mounts'),
    tmp: path.join(abs, 'tmp'),
    executors: path.join(abs, 'executor'),
    cacheMounts: path.join(abs, 'cache-mounts'),
    blobs: path.join(abs, 'content', 'blobs', 'sha256'),
  };
}
