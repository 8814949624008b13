/**
 * A cache mount's directory as a committed snapshot, so it can leave the
 * root the way results do (as layers of an exported cache). Cache mounts
 * are plain directories that builds write in place; the snapshot is a copy
 * taken at one moment (owners, modes, times, xattrs and symlinks kept), so
 * what is exported is one state of the mount, whatever writes it later.
 */
import { copyTree } from '../snapshot/tree-copy.js';
import type { CacheManager, ImmutableRef } from './types.js';

/**
 * A snapshot of cache mount `id`, or undefined when this root has no such
 * mount. The copy is taken under the mount's lock (`locked` sharing): it
 * waits until no locked or private user holds the main instance, so a
 * build that locks the mount is never copied halfway. Release the ref.
 */
export async function snapshotCacheMount(cache: CacheManager, id: string, signal: AbortSignal): Promise<ImmutableRef | undefined> {
  if (!(await cache.cacheMountExists(id))) return undefined;
  await using mount = await cache.cacheMount({ id, sharing: 'locked', signal });
  const copy = await cache.newMutable(null, { description: `cache mount ${id} (for --export-cache)` });
  try {
    {
      await using dir = await copy.mount();
      await copyTree(mount.path, dir.path);
    }
    return await copy.commit();
  } catch (err) {
    await copy.release();
    throw err;
  }
}
