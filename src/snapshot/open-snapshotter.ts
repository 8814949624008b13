/** Opening one of kiln's snapshotters on a root. */
import { mkdir } from 'node:fs/promises';
import { rootLayout } from '../store/layout.js';
import { cleanDeadOwners } from './mounting.js';
import { NativeSnapshotter } from './native.js';
import { OverlaySnapshotter } from './overlayfs.js';
import type { ManagedSnapshotter, SnapshotterOptions } from './stored-snapshotter.js';

/** The snapshotters kiln has. */
export const SNAPSHOTTER_NAMES = ['overlayfs', 'native'] as const;
/** `overlayfs` or `native`. */
export type SnapshotterName = (typeof SNAPSHOTTER_NAMES)[number];

/**
 * Opens snapshotter `name` on the root in `options`, after detaching and
 * removing the mounts and temp files of processes that died.
 */
export async function openSnapshotter(name: SnapshotterName, options: SnapshotterOptions): Promise<ManagedSnapshotter> {
  const layout = rootLayout(options.root);
  await Promise.all([mkdir(layout.mounts, { recursive: true }), mkdir(layout.tmp, { recursive: true })]);
  await cleanDeadOwners(layout.mounts, layout.tmp, options.logger);
  const snapshotter = name === 'overlayfs' ? new OverlaySnapshotter(options) : new NativeSnapshotter(options);
  await snapshotter.init();
  return snapshotter;
}
