/**
 * An exec op's `cache` mount: the persistent directory of its cache id
 * (../../cache/cache-mounts.ts), bind-mounted read-write. A directory made
 * for the first time is seeded: from an imported cache that carries the
 * cache id (`--import-cache` of a cache exported with `cache-mounts=`),
 * else, when the mount names an input, with that input's content (the path
 * its selector picks), as BuildKit does. Later uses keep whatever the
 * directory holds: a mount that exists is never overwritten.
 */
import type { CacheManager, CacheMountRef, ResultRef } from '../../cache/types.js';
import type { ContainerMount } from '../../executor/types.js';
import type { CacheExecMount } from '../../llb/types.js';
import { copyTree } from '../../snapshot/tree-copy.js';
import type { CacheMountSeeder } from '../types.js';

/** The cache mount `spec` (field `field` of the op) in use, and its container mount. */
export async function acquireCacheMount(
  spec: CacheExecMount,
  input: ResultRef,
  cache: CacheManager,
  { signal, selected, imported }: { signal: AbortSignal; selected: (root: string) => Promise<string>; imported?: CacheMountSeeder },
): Promise<{ ref: CacheMountRef; mount: ContainerMount }> {
  const fromInput =
    input === null
      ? undefined
      : async (dir: string): Promise<void> => {
          await using mounted = await input.mount();
          await copyTree(await selected(mounted.path), dir);
        };
  const seed =
    imported === undefined
      ? fromInput
      : async (dir: string): Promise<void> => {
          // Only the cache id's first directory: a further private instance of a mount that exists starts as the input says.
          const known = await cache.cacheMountExists(spec.cache.id);
          if (known || !(await imported(spec.cache.id, dir, signal))) await fromInput?.(dir);
        };
  const ref = await cache.cacheMount({ id: spec.cache.id, sharing: spec.cache.sharing, signal, ...(seed === undefined ? {} : { seed }) });
  return { ref, mount: { destination: spec.dest, type: 'bind', source: ref.path, readonly: spec.readonly } };
}
