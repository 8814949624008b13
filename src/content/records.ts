/**
 * The content store's records: what kiln knows about the blobs it keeps, in
 * tables of kiln's store that the content folder owns (the session hands
 * them over). Each record says why some blobs are kept, and the content
 * collector (./collect.ts) drops a record once nothing it stands for is left:
 *
 * - `content/layer-blobs`: per snapshot layer, the blobs holding its content
 *   (./layer-blobs.ts); kept while the layer's snapshot exists.
 * - `content/images`: images kept under a name by `type=image` outputs
 *   (`kiln images`); kept until `kiln images rm`.
 * - `content/resolved`: the manifest a `docker-image://` reference resolved
 *   to, per platform (for `image.resolvemode=default|local`); kept while a
 *   snapshot unpacked from that manifest exists.
 */
import type { Digest } from '../digest.js';
import type { KvEnv, KvTable } from '../store/store.js';
import type { Descriptor } from './types.js';

/** The blobs of one snapshot layer (keyed by the layer's id). */
export interface LayerBlobRecord {
  /** sha256 of the uncompressed layer tar. */
  readonly diffID: Digest;
  /** By variant: `source` for the blob an image brought, else an export variant such as `gzip-6`. */
  readonly blobs: Readonly<Record<string, Descriptor>>;
}

/** An image kept under a name (`type=image,name=NAME`), keyed by the normalized name. */
export interface NamedImageRecord {
  /** The image's manifest. */
  readonly manifest: Descriptor;
  /** Bytes of the manifest, its config and its layers. */
  readonly size: number;
  readonly createdAt: number;
}

/** What a reference resolved to, keyed by `REFERENCE PLATFORM`. */
export interface ResolvedRecord {
  readonly descriptor: Descriptor;
}

/** The content folder's tables. */
export interface ContentRecords {
  readonly layerBlobs: KvTable<LayerBlobRecord>;
  readonly images: KvTable<NamedImageRecord>;
  readonly resolved: KvTable<ResolvedRecord>;
  /** The environment the tables live in, for transactions over several of them. */
  readonly env: KvEnv;
}

/** The content tables of `env` (kiln's durable store). */
export function contentRecords(env: KvEnv): ContentRecords {
  return {
    layerBlobs: env.table('content/layer-blobs'),
    images: env.table('content/images'),
    resolved: env.table('content/resolved'),
    env,
  };
}
