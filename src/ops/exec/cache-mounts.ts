/**
 * An exec op's `cache` mount: the persistent directory of its cache id
 * (../../cache/cache-mounts.ts), bind-mounted read-write. When the mount
 * names an input, a directory made for the first time is seeded with that
 * input's content (the path its selector picks), as BuildKit does; later
 * uses keep whatever the directory holds.
 */
import type { CacheManager, CacheMountRef, ResultRef } from '../../cache/types.js';
import type { ContainerMount } from '../../executor/types.js';
import type { CacheExecMount } from '../../llb/types.js';
import { copyTree } from '../../snapshot/tree-copy.js';

/** The cache mount `spec` (field `field` of the op) in use, and its container mount. */
export async function acquireCacheMount(
  spec: CacheExecMount,
  input: ResultRef,
  cache: CacheManager,
  { signal, selected }: { signal: AbortSignal; selected: (root: string) => Promise<string> },
): Promise<{ ref: CacheMountRef; mount: ContainerMount }> {
  const seed =
    input === null
      ? undefined
      : async (dir: string): Promise<void> => {
          await using mounted = await input.mount();
          await copyTree(await selected(mounted.path), dir);
        };
  const ref = await cache.cacheMount({ id: spec.cache.id, sharing: spec.cache.sharing, signal, ...(seed === undefined ? {} : { seed }) });
  return { ref, mount: { destination: spec.dest, type: 'bind', source: ref.path, readonly: spec.readonly } };
}
