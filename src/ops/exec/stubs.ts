/**
 * Mount stubs. The runtime creates a directory (or an empty file) in the
 * rootfs for every mount point that is missing there, including its own
 * /proc, /dev, /sys and /etc/hosts. Those stubs are not the process's work,
 * so they must not end up in the committed result: their paths are noted
 * before the run, and what is still empty afterwards is removed.
 */
import { readdirSync, rmdirSync, unlinkSync, utimesSync } from 'node:fs';
import path from 'node:path';
import { type LayeredTree, statOf } from '../../fs/layered-tree.js';

/**
 * Every missing path on the way to each mount point, parents first, as the
 * host paths in `rootfs`'s writable layer where the runtime will create them
 * (the root's own layers are read: it need not be mounted).
 */
export async function missingMountpoints(rootfs: LayeredTree, destinations: readonly string[]): Promise<string[]> {
  const { writable } = rootfs;
  // Without a writable layer the runtime cannot create anything.
  if (writable === undefined) return [];
  const missing = new Set<string>();
  for (const destination of destinations) {
    const parts = destination.split('/').filter((p) => p !== '');
    for (let i = 1; i <= parts.length; i++) {
      const resolved = await rootfs.resolve(`/${parts.slice(0, i).join('/')}`, { followFinal: false });
      if ((await rootfs.entry(resolved)) === undefined) missing.add(path.join(writable, ...resolved));
    }
  }
  return [...missing];
}

/**
 * Removes each stub that is still an empty directory or an empty file,
 * deepest first, so a parent made only to hold a mount point goes too. Only
 * the noted paths are touched: anything the process created stays. The
 * removal does not count as a change of the parent: its times are put back
 * as they were before it (as BuildKit does), so a directory the process
 * left alone compares equal to the one below. The calls are synchronous: a
 * handful of metadata calls on a local directory take microseconds each, a
 * trip through libuv's thread pool a good part of a millisecond, on every
 * exec op.
 */
export function removeStubs(stubs: readonly string[]): void {
  for (const stub of [...stubs].sort((a, b) => b.length - a.length)) {
    const info = statOf(stub);
    if (info === undefined) continue;
    const empty = (info.isFile() && info.size === 0) || (info.isDirectory() && readdirSync(stub).length === 0);
    if (!empty) continue;
    const parent = path.dirname(stub);
    const times = statOf(parent);
    if (info.isDirectory()) rmdirSync(stub);
    else unlinkSync(stub);
    if (times !== undefined) utimesSync(parent, times.atimeMs / 1000, times.mtimeMs / 1000);
  }
}
