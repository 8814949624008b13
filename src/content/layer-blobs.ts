/**
 * Which blobs hold a snapshot layer's content. A layer unpacked from an image
 * remembers the blob it came from, so exporting an image built on it reuses
 * that blob as it is (same digest, no recompression); a layer kiln exported
 * remembers its blob per export variant (compression, level, timestamps), so
 * an unchanged layer is never compressed twice.
 */
import type { MetadataStore } from '../cache/types.js';
import type { Digest } from '../digest.js';
import type { Descriptor } from './types.js';

/** The blobs of one layer (keyed by the snapshot layer's id). */
export interface LayerBlobRecord {
  /** sha256 of the uncompressed layer tar. */
  readonly diffID: Digest;
  /** By variant: `source` for the blob an image brought, else an export variant such as `gzip-6`. */
  readonly blobs: Readonly<Record<string, Descriptor>>;
}

const NAMESPACE = 'layer-blobs';

/** The variant name of a blob the layer was unpacked from. */
export const SOURCE_VARIANT = 'source';

export function getLayerBlobs(metadata: MetadataStore, layerId: string): LayerBlobRecord | undefined {
  return metadata.get<LayerBlobRecord>(NAMESPACE, layerId);
}

/** Adds (or replaces) one variant's blob of a layer. */
export async function putLayerBlob(metadata: MetadataStore, layerId: string, diffID: Digest, variant: string, blob: Descriptor): Promise<void> {
  const old = getLayerBlobs(metadata, layerId);
  // A different diffID means the id now names other content (it never should); start over.
  const blobs = old?.diffID === diffID ? old.blobs : {};
  await metadata.put(NAMESPACE, layerId, { diffID, blobs: { ...blobs, [variant]: blob } } satisfies LayerBlobRecord);
}
