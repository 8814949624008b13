/**
 * Imported caches (`--import-cache`), as the solver's RemoteResults: on a
 * local miss the solver asks here for the vertex's key. The caches are read
 * in the order given, each at its first question (its manifest and
 * description only); a hit downloads and unpacks only the layers of that
 * record's outputs, stores them in the local cache under the key, and hands
 * them over. Layers are unpacked by chain ID, as image layers are, so a
 * chain shared with an image or another record is unpacked once per root.
 *
 * A cache that cannot be used (missing, unreachable, not a kiln cache, a
 * blob that does not match its digest) never fails the build: one warning
 * names it and why, and from then on it is not asked again.
 */
import type { CacheManager, ResultRef } from '../cache/types.js';
import type { CacheDescription, CacheRecord } from '../content/cache-format.js';
import type { CacheTarget } from '../content/cache-target.js';
import { SOURCE_VARIANT } from '../content/layer-blobs.js';
import type { ContentStore } from '../content/store.js';
import type { ImageConfig } from '../content/types.js';
import type { CacheKey, Digest } from '../digest.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import type { ProgressSink } from '../progress/types.js';
import type { RemoteResults, Vertex } from '../solver/types.js';
import { unpackImage } from '../source/image/unpack.js';

/** What importing needs of the solve. */
export interface CacheImportContext {
  readonly cache: CacheManager;
  readonly content: ContentStore;
  /** Where warnings go. */
  readonly progress: ProgressSink;
}

interface Opened {
  readonly target: CacheTarget;
  readonly description: CacheDescription;
  readonly byKey: ReadonlyMap<string, CacheRecord>;
}

/** The imported caches, asked in order; a cache that fails is warned about once and skipped from then on. */
export function importedResults(targets: readonly CacheTarget[], ctx: CacheImportContext): RemoteResults<ResultRef> {
  const opened = new Map<CacheTarget, Promise<Opened | undefined>>();
  const dropped = new Set<CacheTarget>();
  const drop = (target: CacheTarget, err: unknown): undefined => {
    if (dropped.has(target)) return undefined;
    dropped.add(target);
    const why = err instanceof Error ? err.message : String(err);
    ctx.progress.emit({ type: 'warning', message: `cache import from ${target.shown} skipped: ${why}`, timestamp: new Date().toISOString() });
    return undefined;
  };
  const open = (target: CacheTarget, signal: AbortSignal): Promise<Opened | undefined> => {
    let promise = opened.get(target);
    if (promise === undefined) {
      promise = target.load(signal).then(
        ({ description }) => ({ target, description, byKey: new Map(description.records.map((r) => [r.key as string, r])) }),
        (err: unknown) => {
          if (signal.aborted) throw err;
          return drop(target, err);
        },
      );
      opened.set(target, promise);
    }
    return promise;
  };
  return {
    async load(key, vertex, { signal, progress }) {
      for (const target of targets) {
        if (dropped.has(target)) continue;
        const cache = await open(target, signal);
        const record = cache?.byKey.get(key);
        if (cache === undefined || record === undefined) continue;
        try {
          return await materialize(cache, record, key, vertex, { ...ctx, signal, progress });
        } catch (err) {
          if (signal.aborted) throw err;
          drop(target, err);
        }
      }
      return undefined;
    },
  };
}

/** Unpacks a record's outputs and saves them under `key` in the local cache; the caller releases the refs returned. */
async function materialize(
  cache: Opened,
  record: CacheRecord,
  key: CacheKey,
  vertex: Vertex<ResultRef>,
  ctx: CacheImportContext & { readonly signal: AbortSignal; readonly progress: ProgressSink },
): Promise<readonly ResultRef[]> {
  const { description, target } = cache;
  const outputs: ResultRef[] = [];
  try {
    for (const chain of record.outputs) {
      if (chain === null) {
        outputs.push(null);
        continue;
      }
      const layers = chain.map((i) => description.layers[i]).filter((l) => l !== undefined);
      if (layers.length !== chain.length) throw new KilnError(ERROR_CODES.CONTENT, `record ${record.key} names a layer the cache does not have`);
      const descriptors = layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size }));
      const diffIDs: Digest[] = layers.map((l) => l.diffID);
      // The chain is unpacked as an image whose config lists the chain's diffIDs.
      const config = { architecture: '', os: '', rootfs: { type: 'layers', diff_ids: diffIDs } } satisfies ImageConfig;
      outputs.push(
        await unpackImage({
          cache: ctx.cache,
          content: ctx.content,
          image: {
            descriptor: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: record.key as string as Digest, size: 0 },
            manifest: { schemaVersion: 2, config: { mediaType: 'application/json', digest: diffIDs[0] as Digest, size: 0 }, layers: descriptors },
            config,
            name: target.shown,
            fetchLayer: (layer, signal) => target.fetchBlob(layer, signal),
          },
          blobVariants: layers.map((l) => l.variant ?? SOURCE_VARIANT),
          signal: ctx.signal,
          progress: ctx.progress,
          vertex: vertex.digest,
        }),
      );
    }
    await ctx.cache.save(key, outputs, { description: vertex.name });
    return outputs;
  } catch (err) {
    for (const ref of outputs.reverse()) await ref?.release();
    throw err;
  }
}
