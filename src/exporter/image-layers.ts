/**
 * The blob of each snapshot layer of an image output. A layer that came from
 * an image keeps the blob it came in; one exported before with the same
 * variant (compression, level, timestamp clamp) is reused
 * (content/layer-blobs.ts); otherwise it is exported now. Within one solve,
 * outputs that need the same blob share one export through the solve's
 * {@link LayerBlobMemo}, also when they ask at the same time.
 */
import { getLayerBlobs, putLayerBlob, SOURCE_VARIANT } from '../content/layer-blobs.js';
import { comparedLayerChanges, exportLayer, type LayerChange, type LayerChanges, layerOrder, overlayLayerChanges, treeLayerChanges } from '../content/layer/export.js';
import type { Descriptor } from '../content/types.js';
import type { SnapshotLayer } from '../snapshot/types.js';
import type { ExportContext, ImageFormat, LayerBlob } from './types.js';

/** A layer's blob, and whether this call compressed it (rather than found it). */
export interface LayerBlobResult extends LayerBlob {
  readonly exported: boolean;
}

/**
 * The blob of one snapshot layer in `format`: the one it came from, one made
 * before the same way, or a new export (whose chunks also go to `onChunk`,
 * when given, as they are made).
 */
export async function layerBlob(
  layer: SnapshotLayer,
  format: ImageFormat,
  ctx: Pick<ExportContext, 'content' | 'layers' | 'signal'>,
  onChunk?: (chunk: Buffer) => Promise<void>,
): Promise<LayerBlobResult> {
  const { clamp, variant } = layerVariant(format);
  const key = `${layer.id} ${variant}`;
  const shared = ctx.layers.get(key);
  if (shared !== undefined) return { ...(await shared), exported: false };

  const known = getLayerBlobs(ctx.content.records.layerBlobs, layer.id);
  for (const name of [SOURCE_VARIANT, variant]) {
    const blob = known?.blobs[name];
    if (known !== undefined && blob !== undefined && (await ctx.content.has(blob.digest))) return { descriptor: blob, diffID: known.diffID, exported: false };
  }
  // Looked up again: another output may have started this export while we looked in the store.
  const again = ctx.layers.get(key);
  if (again !== undefined) return { ...(await again), exported: false };
  const exporting = (async (): Promise<LayerBlob> => {
    const exported = await exportLayer(await layerChanges(layer), ctx.content, {
      compression: format.compression,
      ...(format.compressionLevel === undefined ? {} : { level: format.compressionLevel }),
      ...(clamp === undefined ? {} : { sourceDateEpoch: clamp }),
      signal: ctx.signal,
      ...(onChunk === undefined ? {} : { onChunk }),
    });
    const descriptor: Descriptor = { mediaType: exported.mediaType, digest: exported.blob.digest, size: exported.blob.size };
    await putLayerBlob(ctx.content.records.layerBlobs, layer.id, exported.diffID, variant, descriptor);
    return { descriptor, diffID: exported.diffID };
  })();
  ctx.layers.set(key, exporting);
  try {
    return { ...(await exporting), exported: true };
  } catch (err) {
    // A failed export is not remembered: a later output (or solve) tries again.
    ctx.layers.delete(key);
    throw err;
  }
}

/** The blob variant name of an export `format` (compression, level, timestamp clamp), and its clamp. */
export function layerVariant(format: ImageFormat): { readonly variant: string; readonly clamp: number | undefined } {
  const clamp = format.sourceDateEpoch !== undefined && format.rewriteTimestamp !== false ? format.sourceDateEpoch : undefined;
  const level = format.compression === 'gzip' ? (format.compressionLevel ?? 'default') : undefined;
  return { clamp, variant: [format.compression, level, clamp === undefined ? undefined : `epoch${clamp}`].filter((p) => p !== undefined).join('-') };
}

/** The changes a snapshot layer holds, in tar order. */
async function layerChanges(layer: SnapshotLayer): Promise<LayerChanges> {
  const c = layer.content;
  if (c.kind === 'overlay-dir') return overlayLayerChanges(c.dir);
  // A layer with no lower is streamed from the walk as it goes (nothing to compare, nothing to sort).
  if (c.base === undefined && c.deleted.length === 0) return treeLayerChanges(c.tree);
  const compared = await comparedLayerChanges(c.base, c.tree);
  if (c.deleted.length === 0) return compared;
  const whiteouts: LayerChange[] = c.deleted.map((p) => ({ kind: 'whiteout', path: p }));
  return [...compared, ...whiteouts].sort(layerOrder);
}
