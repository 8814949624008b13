/**
 * kiln's build cache as an OCI artifact (docs/cache-format.md): an image
 * manifest whose config blob is the cache description below and whose
 * layers are the result layers, as ordinary OCI layer blobs (the same blobs
 * an image output of the same result has). A record maps one of kiln's
 * cache keys to the layer chains of the op's outputs.
 *
 * Nothing read here is trusted: the description is checked for shape, its
 * layers must be the manifest's, and every blob is verified against its
 * digest when it is fetched.
 */
import { type CacheKey, type Digest, isDigest } from '../digest.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import { type Descriptor, type ImageManifest, layerCompression, MEDIA_TYPES } from './types.js';

export const CACHE_MEDIA_TYPES = {
  /** The manifest's `artifactType`. */
  artifact: 'application/vnd.kiln.cache.v1',
  /** The config blob: a {@link CacheDescription}. */
  config: 'application/vnd.kiln.cache.config.v1+json',
} as const;

/** One layer blob of the artifact, in manifest order. */
export interface CacheLayer {
  readonly digest: Digest;
  readonly size: number;
  readonly mediaType: string;
  /** sha256 of the uncompressed tar: what the snapshot's chain is keyed by, and what an unpack is checked against. */
  readonly diffID: Digest;
  /**
   * How kiln made the blob (content/layer-blobs.ts: `source` for a layer
   * pulled from an image, else compression, level and timestamp clamp), so
   * the importer's image outputs made the same way reuse it as it is.
   */
  readonly variant?: string;
}

/** One op's results. */
export interface CacheRecord {
  /** kiln's cache key of the op (the same definition and inputs give the same key on every machine). */
  readonly key: CacheKey;
  /** The op's name as progress showed it. */
  readonly op: string;
  /** When the record was exported (RFC 3339). */
  readonly created: string;
  /** Bytes of the distinct blobs its outputs use. */
  readonly size: number;
  /** Per output: indexes into `layers`, bottom first; null for the empty filesystem. */
  readonly outputs: readonly (readonly number[] | null)[];
}

/**
 * The contents of one cache mount (`cache-mounts=` on the export): a
 * snapshot of the mount's directory as the exporting build left it.
 */
export interface CacheMountRecord {
  /** The cache id: what an exec op's cache mount names (`cache.id`); kiln keys cache mounts by it alone. */
  readonly id: string;
  /** When the snapshot was taken (RFC 3339). */
  readonly created: string;
  /** Bytes of its blobs. */
  readonly size: number;
  /** Indexes into `layers`, bottom first. */
  readonly layers: readonly number[];
}

/** The config blob of a cache artifact. */
export interface CacheDescription {
  readonly version: 1;
  readonly layers: readonly CacheLayer[];
  readonly records: readonly CacheRecord[];
  /** Cache mounts exported with the results (absent when none were asked for). */
  readonly mounts?: readonly CacheMountRecord[];
}

/** The manifest of a cache artifact whose config blob is `config`. */
export function cacheManifest(config: Descriptor, description: CacheDescription): ImageManifest & { readonly artifactType: string } {
  return {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.ociManifest,
    artifactType: CACHE_MEDIA_TYPES.artifact,
    config: { mediaType: CACHE_MEDIA_TYPES.config, digest: config.digest, size: config.size },
    layers: description.layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
  };
}

/**
 * Checks a manifest and its config blob as a cache artifact; throws a
 * KilnError (E_CONTENT) saying what is wrong.
 */
export function parseCacheDescription(manifest: unknown, configBytes: Buffer, shown: string): CacheDescription {
  const bad = (why: string): KilnError => new KilnError(ERROR_CODES.CONTENT, `${shown}: not a kiln cache: ${why}`);
  const m = manifest as Partial<ImageManifest> | null;
  if (typeof m !== 'object' || m === null || !Array.isArray(m.layers) || m.config?.mediaType !== CACHE_MEDIA_TYPES.config) {
    throw bad(`the manifest's config is not ${CACHE_MEDIA_TYPES.config}`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(configBytes.toString('utf8'));
  } catch (err) {
    throw bad(`the cache description is not JSON (${(err as Error).message})`);
  }
  const d = doc as Partial<CacheDescription> | null;
  if (typeof d !== 'object' || d === null || d.version !== 1 || !Array.isArray(d.layers) || !Array.isArray(d.records)) {
    throw bad('the cache description is not version 1 with layers and records');
  }
  if (d.layers.length !== m.layers.length) throw bad(`the description has ${d.layers.length} layers, the manifest ${m.layers.length}`);
  d.layers.forEach((layer, i) => {
    const listed = m.layers?.[i];
    if (!isDigest(String(layer?.digest)) || !isDigest(String(layer?.diffID)) || !Number.isSafeInteger(layer?.size) || typeof layer?.mediaType !== 'string') {
      throw bad(`layer ${i} lacks a digest, diffID, size or media type`);
    }
    if (layer.variant !== undefined && typeof layer.variant !== 'string') throw bad(`layer ${i} has a variant that is not a string`);
    if (listed?.digest !== layer.digest || listed?.size !== layer.size) throw bad(`layer ${i} is not the manifest's layer ${i}`);
    const compression = layerCompression(layer.mediaType);
    if (compression !== 'gzip' && compression !== 'uncompressed') throw bad(`layer ${i} has media type ${layer.mediaType} (gzip and uncompressed tars only)`);
  });
  const count = d.layers.length;
  for (const [i, r] of d.records.entries()) {
    const chainOk = (chain: unknown): boolean => chain === null || (Array.isArray(chain) && chain.every((n) => Number.isInteger(n) && n >= 0 && n < count));
    if (typeof r?.key !== 'string' || typeof r.op !== 'string' || !Array.isArray(r.outputs) || !r.outputs.every(chainOk)) {
      throw bad(`record ${i} lacks a key, op name or valid outputs`);
    }
  }
  if (d.mounts !== undefined) {
    if (!Array.isArray(d.mounts)) throw bad('mounts is not a list');
    const ids = new Set<string>();
    for (const [i, mount] of d.mounts.entries()) {
      const chain = (mount as Partial<CacheMountRecord> | null)?.layers;
      const id = (mount as Partial<CacheMountRecord> | null)?.id;
      if (typeof id !== 'string' || id === '' || !Array.isArray(chain) || !chain.every((n) => Number.isInteger(n) && n >= 0 && n < count)) {
        throw bad(`cache mount ${i} lacks an id or valid layers`);
      }
      if (ids.has(id)) throw bad(`cache mount "${id}" is listed twice`);
      ids.add(id);
    }
  }
  return d as CacheDescription;
}
