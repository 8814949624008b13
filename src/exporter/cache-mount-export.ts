/**
 * Cache mounts in an exported cache (`cache-mounts=` on `--export-cache`):
 * each mount's snapshot (cache/cache-mount-snapshot.ts) goes through the
 * same layer path as the results (cache-export.ts: blob reuse, parallel
 * compression, one upload per blob); this file turns their layer chains
 * into the description's `mounts` records.
 */
import type { CacheLayer, CacheMountRecord } from '../content/cache-format.js';
import type { CacheMountSource } from './types.js';

/** Bytes of the distinct blobs the chains use. */
export function blobBytes(chains: readonly (readonly number[] | null)[], layers: readonly CacheLayer[]): number {
  const used = new Set(chains.flatMap((chain) => chain ?? []));
  return [...used].reduce((n, at) => n + (layers[at]?.size ?? 0), 0);
}

/**
 * One record per cache mount, in the order given: `chains[i]` is mount i's
 * one output (its snapshot layers by id); `index` maps a layer id to its
 * place in `layers`. A mount whose snapshot is empty has no layers.
 */
export function describeMounts(
  mounts: readonly CacheMountSource[],
  chains: readonly (readonly (readonly string[] | null)[])[],
  { index, layers, created }: { readonly index: (id: string) => number; readonly layers: readonly CacheLayer[]; readonly created: string },
): CacheMountRecord[] {
  return mounts.map((mount, i) => {
    const chain = (chains[i]?.[0] ?? []).map(index);
    return { id: mount.id, created, size: blobBytes([chain], layers), layers: chain };
  });
}
