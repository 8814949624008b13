/**
 * Turns an image's layers into snapshots. Layer N's snapshot is stored in
 * the results cache under the image's chain ID for N (which names the whole
 * stack of layers 0..N by their uncompressed digests), so images that share
 * base layers share their snapshots, and a layer is unpacked once per root,
 * even by processes pulling the same image at once (the cache's claim).
 * Missing blobs are downloaded in parallel while the layers are applied in
 * order, each as soon as its blob and the layer below it are ready.
 */
import pLimit from 'p-limit';
import type { CacheManager, ImmutableRef, ResultRef } from '../../cache/types.js';
import { putLayerBlob, SOURCE_VARIANT } from '../../content/layer-blobs.js';
import type { ContentStore } from '../../content/store.js';
import { applyLayer } from '../../content/layer/unpack.js';
import { layerCompression } from '../../content/types.js';
import { type CacheKey, type Digest, digestOf, sha256 } from '../../digest.js';
import { ERROR_CODES, KilnError } from '../../errors.js';
import type { ProgressSink } from '../../progress/types.js';
import type { ResolvedImage } from './types.js';

/** Layer blobs downloaded at once: two keep the link busy while the first layer arrives early (layers unpack in order). */
const DOWNLOADS = 2;

export interface UnpackImageOptions {
  readonly cache: CacheManager;
  readonly content: ContentStore;
  readonly image: ResolvedImage;
  readonly signal: AbortSignal;
  readonly progress: ProgressSink;
  /** The vertex that progress belongs to. */
  readonly vertex: string;
  /** Unpack only the first N layers (`image.layerlimit`). */
  readonly layerLimit?: number;
  /**
   * The blob variant each layer is recorded under (content/layer-blobs.ts),
   * by manifest index; default `source`. An imported build cache says which
   * export made each blob, so outputs made the same way reuse it.
   */
  readonly blobVariants?: readonly string[];
}

/** The chain IDs of a list of diffIDs (OCI image-spec's definition). */
function chainIds(diffIDs: readonly Digest[]): Digest[] {
  const out: Digest[] = [];
  for (const diffID of diffIDs) {
    const below = out.at(-1);
    out.push(below === undefined ? diffID : sha256(`${below} ${diffID}`));
  }
  return out;
}

/** The image's root filesystem as a ref (null for an image with no layers). */
export async function unpackImage(options: UnpackImageOptions): Promise<ResultRef> {
  const { cache, image, signal } = options;
  // Both resolvers checked that the config has one diff_id per layer.
  const layers = image.manifest.layers.slice(0, options.layerLimit);
  const diffIDs = image.config.rootfs.diff_ids.slice(0, options.layerLimit);
  const keys = chainIds(diffIDs).map((chain) => digestOf({ layerChain: chain, snapshotter: cache.snapshotter }) as string as CacheKey);

  // The highest layer already unpacked: everything below it is there too.
  let ref: ResultRef = null;
  let next = 0;
  for (let i = keys.length - 1; i >= 0; i--) {
    const found = await cache.lookup(keys[i] as CacheKey);
    if (found?.[0] !== undefined && found[0] !== null) {
      ref = found[0];
      next = i + 1;
      break;
    }
  }
  if (next === layers.length) return ref;

  const limit = pLimit(DOWNLOADS);
  const started = new Date().toISOString();
  // Bytes are counted per layer blob as it arrives (or is found in the content store).
  const totalBytes = layers.slice(next).reduce((n, l) => n + l.size, 0);
  let fetched = 0;
  const fetches = layers.slice(next).map((layer) =>
    limit(async () => {
      await image.fetchLayer(layer, signal);
      fetched += layer.size;
      const completed = fetched === totalBytes ? { completed: new Date().toISOString() } : {};
      options.progress.emit({ type: 'status', vertex: options.vertex, id: 'pulling layers', current: fetched, total: totalBytes, unit: 'bytes', started, ...completed });
    }),
  );
  // Unawaited fetches must not turn into unhandled rejections when an earlier one fails.
  for (const f of fetches) f.catch(() => undefined);
  try {
    for (let i = next; i < layers.length; i++) {
      const layer = layers[i] as (typeof layers)[number];
      options.progress.emit({ type: 'status', vertex: options.vertex, id: 'unpacking layers', current: i, total: layers.length, started });
      await fetches[i - next];
      const below: ResultRef = ref;
      const key = keys[i] as CacheKey;
      // Another process on this root may be unpacking the same layer: one
      // unpack per chain, whoever claims it first; the others take its result.
      {
        await using _claim = await cache.claim(key, signal);
        const made = await cache.lookup(key);
        ref = made?.[0] ?? (await unpackLayer({ ...options, below, index: i, key, diffID: diffIDs[i] as Digest, layer }));
      }
      await below?.release();
    }
    options.progress.emit({ type: 'status', vertex: options.vertex, id: 'unpacking layers', current: layers.length, total: layers.length, started, completed: new Date().toISOString() });
    return ref;
  } catch (err) {
    await ref?.release();
    throw err;
  }
}

async function unpackLayer(
  options: UnpackImageOptions & { below: ResultRef; index: number; key: CacheKey; diffID: Digest; layer: ResolvedImage['manifest']['layers'][number] },
): Promise<ImmutableRef> {
  const { cache, image, layer, signal } = options;
  const compression = layerCompression(layer.mediaType);
  if (compression === undefined || compression === 'zstd') {
    throw new KilnError(ERROR_CODES.IMAGE, `${image.name}: layer ${layer.digest} has media type ${layer.mediaType}, which kiln cannot unpack (gzip and uncompressed tars only)`);
  }
  const description = `${image.name} layer ${options.index + 1}/${image.manifest.layers.length}`;
  const mutable = await cache.newMutable(options.below, { description });
  let committed: ImmutableRef | undefined;
  try {
    {
      await using dir = await mutable.mount();
      const { diffID } = await applyLayer(await options.content.open(layer.digest), dir.path, { compression, signal });
      if (diffID !== options.diffID) {
        throw new KilnError(ERROR_CODES.CONTENT, `${image.name}: layer ${layer.digest} unpacks to ${diffID}, but the config says ${options.diffID}; the image is corrupt`);
      }
    }
    committed = await mutable.commit();
  } finally {
    if (committed === undefined) await mutable.release();
  }
  try {
    const own = (await committed.layers()).at(-1);
    if (own !== undefined) await putLayerBlob(options.content.records.layerBlobs, own.id, options.diffID, options.blobVariants?.[options.index] ?? SOURCE_VARIANT, layer);
    await cache.save(options.key, [committed], { description });
    return committed;
  } catch (err) {
    await committed.release();
    throw err;
  }
}
