/**
 * Which blobs hold a snapshot layer's content. A layer unpacked from an image
 * remembers the blob it came from, so exporting an image built on it reuses
 * that blob as it is (same digest, no recompression); a layer kiln exported
 * remembers its blob per export variant (compression, level, timestamps), so
 * an unchanged layer is never compressed twice. The records live in the
 * content folder's `layer-blobs` table (./records.ts), and go when their
 * layer's snapshot does (./collect.ts).
 */
import type { Digest } from '../digest.js';
import type { KvTable } from '../store/store.js';
import type { LayerBlobRecord } from './records.js';
import type { Descriptor } from './types.js';

export type { LayerBlobRecord } from './records.js';

/** The variant name of a blob the layer was unpacked from. */
export const SOURCE_VARIANT = 'source';

export function getLayerBlobs(table: KvTable<LayerBlobRecord>, layerId: string): LayerBlobRecord | undefined {
  return table.get(layerId);
}

/** Adds (or replaces) one variant's blob of a layer. */
export async function putLayerBlob(table: KvTable<LayerBlobRecord>, layerId: string, diffID: Digest, variant: string, blob: Descriptor): Promise<void> {
  const old = getLayerBlobs(table, layerId);
  // A different diffID means the id now names other content (it never should); start over.
  const blobs = old?.diffID === diffID ? old.blobs : {};
  table.put(layerId, { diffID, blobs: { ...blobs, [variant]: blob } });
}
