/**
 * Where things live under kiln's root. The layout is described for users in
 * src/cache/manager.ts; this is the one place that spells the paths.
 */
import { mkdir, stat } from 'node:fs/promises';
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
  /** git sources' bare repositories, one per remote URL (source/git/remote-cache.ts). */
  readonly git: string;
  /** The build history: one folder per build, its record and its steps' full logs (src/history/). */
  readonly history: string;
  /** Lock files that make one process do work every process would otherwise repeat (cache/manager.ts `claim`). */
  readonly locks: string;
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
    git: path.join(abs, 'git'),
    history: path.join(abs, 'history'),
    locks: path.join(abs, 'locks'),
  };
}

/**
 * `mkdir -p` that fails at once with the OS's own error. Node's recursive
 * mkdir retries the parent forever where a directory exists but refuses
 * children with ENOENT (`/proc/self/x`); this walks up to the nearest
 * existing ancestor, then makes each missing directory in turn.
 */
export async function makeDirectories(dir: string): Promise<void> {
  const missing: string[] = [];
  let at = path.resolve(dir);
  for (;;) {
    try {
      const found = await stat(at);
      if (!found.isDirectory()) throw Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${at}'`), { code: 'ENOTDIR' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      const parent = path.dirname(at);
      if (parent === at) break;
      missing.push(at);
      at = parent;
    }
  }
  for (const d of missing.reverse()) {
    try {
      await mkdir(d);
    } catch (err) {
      // Another process may make the same directory at the same moment.
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
}
