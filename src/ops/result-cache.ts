/** The solver's ResultCache over the cache manager's results records. */
import type { CacheManager, ResultRef } from '../cache/types.js';
import type { CacheKey } from '../digest.js';
import type { ResultCache, Vertex } from '../solver/types.js';

/** Adapts a CacheManager to the solver's generic ResultCache. */
export function resultCache(cache: CacheManager): ResultCache<ResultRef> {
  return {
    load: (key: CacheKey) => cache.lookup(key),
    save: (key: CacheKey, outputs: readonly ResultRef[], vertex: Vertex<ResultRef>) =>
      cache.save(key, outputs, { description: vertex.name }),
    release: async (result: ResultRef) => {
      await result?.release();
    },
    retain: (result: ResultRef) => result?.clone() ?? null,
  };
}
