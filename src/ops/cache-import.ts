/**
 * Imported caches (`--import-cache`), as the solver's RemoteResults: on a
 * local miss the solver asks here for the vertex's key. The caches are read
 * in the order given, each at its first question (its manifest and
 * description only); a hit downloads and unpacks only the layers of that
 * record's outputs, stores them in the local cache under the key, and hands
 * them over. Layers are unpacked by chain ID, as image layers are, so a
 * chain shared with an image or another record is unpacked once per root.
 *
 * The same caches seed cache mounts (`mounts` records, exported with
 * `cache-mounts=`): a cache mount an exec op is about to make for the first
 * time in this root is filled from the first cache that carries its id; its
 * layers are downloaded only then.
 *
 * A cache that cannot be used (missing, unreachable, not a kiln cache, a
 * blob that does not match its digest) does not fail the build: one warning
 * names it and why, and from then on it is not asked again. Given with
 * `ignore-error=false`, it fails the build instead (CacheImportError), and
 * its manifest is read before anything runs.
 */
import type { CacheManager, ResultRef } from '../cache/types.js';
import type { CacheDescription, CacheMountRecord, CacheRecord } from '../content/cache-format.js';
import type { CacheTarget } from '../content/cache-target.js';
import { SOURCE_VARIANT } from '../content/layer-blobs.js';
import type { ContentStore } from '../content/store.js';
import type { ImageConfig } from '../content/types.js';
import type { CacheKey, Digest } from '../digest.js';
import { CacheImportError, ERROR_CODES, KilnError } from '../errors.js';
import type { ProgressSink } from '../progress/types.js';
import type { RemoteResults, Vertex } from '../solver/types.js';
import { copyTree } from '../snapshot/tree-copy.js';
import { unpackImage } from '../source/image/unpack.js';

/** What importing needs of the solve. */
export interface CacheImportContext {
  readonly cache: CacheManager;
  readonly content: ContentStore;
  /** Where warnings go. */
  readonly progress: ProgressSink;
}

/** One cache to import from, and whether its failure is only a warning (the default). */
export interface CacheSource {
  readonly target: CacheTarget;
  /** false: a failure to use this cache fails the build. */
  readonly ignoreError?: boolean;
}

/** The imported caches of one solve. */
export interface ImportedCaches {
  /** The solver's question on a local miss. */
  readonly results: RemoteResults<ResultRef>;
  /**
   * Fills `dir`, a cache mount `id` being made for the first time, from the
   * first cache that carries it; false when none does. `vertex` is the op
   * whose progress the download shows under.
   */
  seedMount(id: string, dir: string, options: { readonly signal: AbortSignal; readonly vertex: string }): Promise<boolean>;
  /** Reads now every cache given ignore-error=false: one that cannot be read fails here, before anything runs. */
  check(signal: AbortSignal): Promise<void>;
}

interface Opened {
  readonly target: CacheTarget;
  readonly description: CacheDescription;
  readonly byKey: ReadonlyMap<string, CacheRecord>;
  readonly mounts: ReadonlyMap<string, CacheMountRecord>;
}

/** The imported caches, asked in order; a cache that fails is warned about once and skipped from then on (or fails the build). */
export function importCaches(sources: readonly CacheSource[], ctx: CacheImportContext): ImportedCaches {
  const opened = new Map<CacheTarget, Promise<Opened | undefined>>();
  const dropped = new Set<CacheTarget>();
  const strict = new Set(sources.filter((s) => s.ignoreError === false).map((s) => s.target));
  const targets = sources.map((s) => s.target);
  const drop = (target: CacheTarget, err: unknown): undefined => {
    const why = err instanceof Error ? err.message : String(err);
    if (strict.has(target)) throw new CacheImportError(target.shown, why, err);
    if (dropped.has(target)) return undefined;
    dropped.add(target);
    ctx.progress.emit({ type: 'warning', message: `cache import from ${target.shown} skipped: ${why}`, timestamp: new Date().toISOString() });
    return undefined;
  };
  const open = (target: CacheTarget, signal: AbortSignal): Promise<Opened | undefined> => {
    let promise = opened.get(target);
    if (promise === undefined) {
      promise = target.load(signal).then(
        ({ description }) => ({
          target,
          description,
          byKey: new Map(description.records.map((r) => [r.key as string, r])),
          mounts: new Map((description.mounts ?? []).map((m) => [m.id, m])),
        }),
        (err: unknown) => {
          if (signal.aborted) throw err;
          return drop(target, err);
        },
      );
      opened.set(target, promise);
    }
    return promise;
  };
  /** The first usable cache's answer for `pick`, or undefined; a cache whose answer cannot be used is dropped. */
  const ask = async <R, T>(
    signal: AbortSignal,
    pick: (cache: Opened) => R | undefined,
    use: (cache: Opened, found: R) => Promise<T>,
  ): Promise<T | undefined> => {
    for (const target of targets) {
      if (dropped.has(target)) continue;
      const cache = await open(target, signal);
      const found = cache === undefined ? undefined : pick(cache);
      if (cache === undefined || found === undefined) continue;
      try {
        return await use(cache, found);
      } catch (err) {
        if (signal.aborted) throw err;
        drop(target, err);
      }
    }
    return undefined;
  };
  return {
    results: {
      load: (key, vertex, { signal, progress }) =>
        ask(
          signal,
          (cache) => cache.byKey.get(key),
          (cache, record) => materialize(cache, record, key, vertex, { ...ctx, signal, progress }),
        ),
    },
    async seedMount(id, dir, { signal, vertex }) {
      const seeded = await ask(
        signal,
        (cache) => cache.mounts.get(id),
        async (cache, record) => {
          const ref = await unpackChain(cache, record.layers, `cache mount ${id}`, { ...ctx, signal, vertex });
          try {
            // An empty mount was exported with no layers: the new directory stays empty.
            if (ref === null) return true;
            await using mounted = await ref.mount();
            await copyTree(mounted.path, dir);
            return true;
          } finally {
            await ref?.release();
          }
        },
      );
      return seeded === true;
    },
    async check(signal) {
      for (const target of strict) await open(target, signal);
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
  const outputs: ResultRef[] = [];
  try {
    for (const chain of record.outputs) {
      outputs.push(chain === null ? null : await unpackChain(cache, chain, `record ${record.key}`, { ...ctx, vertex: vertex.digest }));
    }
    await ctx.cache.save(key, outputs, { description: vertex.name });
    return outputs;
  } catch (err) {
    for (const ref of outputs.reverse()) await ref?.release();
    throw err;
  }
}

/**
 * One layer chain of the cache (indexes into its layers) as a ref, unpacked
 * as an image whose config lists the chain's diffIDs (so by chain ID: a
 * chain unpacked before is not unpacked again); null for an empty chain.
 */
async function unpackChain(
  cache: Opened,
  chain: readonly number[],
  what: string,
  ctx: CacheImportContext & { readonly signal: AbortSignal; readonly vertex: string },
): Promise<ResultRef> {
  const { description, target } = cache;
  if (chain.length === 0) return null;
  const layers = chain.map((i) => description.layers[i]).filter((l) => l !== undefined);
  if (layers.length !== chain.length) throw new KilnError(ERROR_CODES.CONTENT, `${what} names a layer the cache does not have`);
  const descriptors = layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size }));
  const diffIDs: Digest[] = layers.map((l) => l.diffID);
  const config = { architecture: '', os: '', rootfs: { type: 'layers', diff_ids: diffIDs } } satisfies ImageConfig;
  return unpackImage({
    cache: ctx.cache,
    content: ctx.content,
    image: {
      descriptor: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: diffIDs.at(-1) as Digest, size: 0 },
      manifest: { schemaVersion: 2, config: { mediaType: 'application/json', digest: diffIDs[0] as Digest, size: 0 }, layers: descriptors },
      config,
      name: target.shown,
      fetchLayer: (layer, signal) => target.fetchBlob(layer, signal),
    },
    blobVariants: layers.map((l) => l.variant ?? SOURCE_VARIANT),
    signal: ctx.signal,
    progress: ctx.progress,
    vertex: ctx.vertex,
  });
}
