/**
 * Assembling an image from a solved result: one layer per snapshot layer
 * (a base image's layers are reused as the blobs they came in, and a layer
 * kiln already compressed the same way is reused too), an image config
 * (the base image's, then the definition's `image.config` over it), and a
 * manifest, all written to the content store.
 *
 * With SOURCE_DATE_EPOCH, the config's created time and history use it and
 * (unless rewrite-timestamp=false) every file time in new layers is clamped
 * to it, so two clean builds of the same definition give the same digest.
 */
import type { ResultRef } from '../cache/types.js';
import { getLayerBlobs, putLayerBlob, SOURCE_VARIANT } from '../content/layer-blobs.js';
import { comparedLayerChanges, exportLayer, type LayerChange, layerOrder, overlayLayerChanges } from '../content/layer/export.js';
import type { ContentStore } from '../content/store.js';
import {
  type Descriptor,
  type HistoryEntry,
  type ImageConfig,
  type ImageManifest,
  type ImagePlatform,
  type ImageRunConfig,
  layerCompression,
  MEDIA_TYPES,
} from '../content/types.js';
import type { Digest } from '../digest.js';
import type { ImageConfig as LlbImageConfig } from '../llb/types.js';
import type { SnapshotLayer } from '../snapshot/types.js';

/** How new layers are written and which media types the image uses. */
export interface ImageFormat {
  readonly compression: 'gzip' | 'uncompressed';
  /** gzip level 0-9 (default: the layer exporter's). */
  readonly compressionLevel?: number;
  /** OCI media types (true) or Docker schema 2 ones (false). */
  readonly ociMediaTypes: boolean;
  /** Seconds since the epoch (SOURCE_DATE_EPOCH): the created time, and the clamp for file times. */
  readonly sourceDateEpoch?: number;
  /** Clamp file times in new layers to sourceDateEpoch (default: true when it is set). */
  readonly rewriteTimestamp?: boolean;
}

export interface BuildImageOptions {
  readonly ref: ResultRef;
  readonly content: ContentStore;
  readonly platform: ImagePlatform;
  /** The definition's `image.config`. */
  readonly config?: LlbImageConfig;
  /** The config of the definition's `image.base`. */
  readonly baseConfig?: ImageConfig;
  readonly format: ImageFormat;
  readonly signal?: AbortSignal;
}

/** A built image: its manifest's descriptor and bytes (manifest, config and layers are in the content store). */
export interface BuiltImage {
  readonly manifest: Descriptor;
  /** The manifest as stored, for pushing it as it is. */
  readonly manifestBytes: Buffer;
  readonly configDescriptor: Descriptor;
  readonly layers: readonly Descriptor[];
  /** Bytes of the manifest, the config and the layers. */
  readonly size: number;
}

/** Builds the image of `ref` into the content store. */
export async function buildImage(options: BuildImageOptions): Promise<BuiltImage> {
  const { format } = options;
  const snapshotLayers = options.ref === null ? [] : await options.ref.layers();
  const layers: { descriptor: Descriptor; diffID: Digest }[] = [];
  // One at a time: each export already keeps zlib busy, and layers are written in order anyway.
  for (const layer of snapshotLayers) layers.push(await layerBlob(layer, options));

  const created = format.sourceDateEpoch === undefined ? new Date() : new Date(format.sourceDateEpoch * 1000);
  const config = imageConfig({
    ...options,
    diffIDs: layers.map((l) => l.diffID),
    created: created.toISOString(),
  });
  const configBlob = await options.content.writeJson(config);
  const configDescriptor: Descriptor = {
    mediaType: format.ociMediaTypes ? MEDIA_TYPES.ociConfig : MEDIA_TYPES.dockerConfig,
    digest: configBlob.digest,
    size: configBlob.size,
  };
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: format.ociMediaTypes ? MEDIA_TYPES.ociManifest : MEDIA_TYPES.dockerManifest,
    config: configDescriptor,
    layers: layers.map((l) => ({ ...l.descriptor, mediaType: layerMediaType(l.descriptor.mediaType, format.ociMediaTypes) })),
  };
  const manifestBlob = await options.content.writeJson(manifest);
  return {
    manifest: { mediaType: manifest.mediaType as string, digest: manifestBlob.digest, size: manifestBlob.size },
    manifestBytes: manifestBlob.bytes,
    configDescriptor,
    layers: manifest.layers,
    size: manifestBlob.size + configBlob.size + manifest.layers.reduce((n, l) => n + l.size, 0),
  };
}

/** The blob of one snapshot layer: the one it came from, one made before the same way, or a new export. */
async function layerBlob(layer: SnapshotLayer, options: BuildImageOptions): Promise<{ descriptor: Descriptor; diffID: Digest }> {
  const { content, format } = options;
  const layerBlobs = content.records.layerBlobs;
  const known = getLayerBlobs(layerBlobs, layer.id);
  const clamp = format.sourceDateEpoch !== undefined && format.rewriteTimestamp !== false ? format.sourceDateEpoch : undefined;
  const level = format.compression === 'gzip' ? (format.compressionLevel ?? 'default') : undefined;
  const variant = [format.compression, level, clamp === undefined ? undefined : `epoch${clamp}`].filter((p) => p !== undefined).join('-');
  for (const name of [SOURCE_VARIANT, variant]) {
    const blob = known?.blobs[name];
    if (known !== undefined && blob !== undefined && (await content.has(blob.digest))) return { descriptor: blob, diffID: known.diffID };
  }
  const exported = await exportLayer(await layerChanges(layer), content, {
    compression: format.compression,
    ...(format.compressionLevel === undefined ? {} : { level: format.compressionLevel }),
    ...(clamp === undefined ? {} : { sourceDateEpoch: clamp }),
    ...(options.signal === undefined ? {} : { signal: options.signal }),
  });
  const descriptor: Descriptor = { mediaType: exported.mediaType, digest: exported.blob.digest, size: exported.blob.size };
  await putLayerBlob(layerBlobs, layer.id, exported.diffID, variant, descriptor);
  return { descriptor, diffID: exported.diffID };
}

/** The changes a snapshot layer holds, in tar order. */
async function layerChanges(layer: SnapshotLayer): Promise<readonly LayerChange[] | AsyncIterable<LayerChange>> {
  const c = layer.content;
  if (c.kind === 'overlay-dir') return overlayLayerChanges(c.dir);
  const compared = await comparedLayerChanges(c.base, c.tree);
  if (c.deleted.length === 0) return compared;
  const whiteouts: LayerChange[] = c.deleted.map((p) => ({ kind: 'whiteout', path: p }));
  return [...compared, ...whiteouts].sort(layerOrder);
}

/** A layer media type in the family the image uses (the bytes do not change). */
function layerMediaType(mediaType: string, oci: boolean): string {
  switch (layerCompression(mediaType)) {
    case 'gzip':
      return oci ? MEDIA_TYPES.ociLayerGzip : MEDIA_TYPES.dockerLayerGzip;
    case 'uncompressed':
      return oci ? MEDIA_TYPES.ociLayer : MEDIA_TYPES.dockerLayer;
    default:
      return mediaType;
  }
}

/** The image config: the base's (unknown fields kept), then the definition's fields over it. */
function imageConfig(options: BuildImageOptions & { diffIDs: readonly Digest[]; created: string }): ImageConfig {
  const base = options.baseConfig;
  const baseDiffIDs = base?.rootfs.diff_ids ?? [];
  const onBase = baseDiffIDs.length > 0 && baseDiffIDs.every((d, i) => options.diffIDs[i] === d);
  // The base's history describes its layers; new layers get one entry each.
  const history: HistoryEntry[] = onBase ? [...(base?.history ?? [])] : [];
  const newLayers = options.diffIDs.length - (onBase ? baseDiffIDs.length : 0);
  for (let i = 0; i < newLayers; i++) history.push({ created: options.created, created_by: 'kiln build', comment: 'kiln' });
  const { platform } = options;
  return {
    ...(base ?? {}),
    created: options.created,
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant === undefined ? {} : { variant: platform.variant }),
    config: runConfig(base?.config ?? {}, options.config ?? {}),
    rootfs: { type: 'layers', diff_ids: [...options.diffIDs] },
    history,
  };
}

/** `image.config` over the base's runtime config, field by field; env entries replace by variable name. */
function runConfig(base: ImageRunConfig, over: LlbImageConfig): ImageRunConfig {
  const out: Record<string, unknown> = { ...base };
  if (over.env !== undefined) out['Env'] = mergeEnv(base.Env ?? [], over.env);
  if (over.entrypoint !== undefined) out['Entrypoint'] = [...over.entrypoint];
  if (over.cmd !== undefined) out['Cmd'] = [...over.cmd];
  if (over.workingDir !== undefined) out['WorkingDir'] = over.workingDir;
  if (over.user !== undefined) out['User'] = over.user;
  if (over.labels !== undefined) out['Labels'] = { ...over.labels };
  if (over.exposedPorts !== undefined) out['ExposedPorts'] = Object.fromEntries(over.exposedPorts.map((p) => [p.includes('/') ? p : `${p}/tcp`, {}]));
  return out as ImageRunConfig;
}

function mergeEnv(base: readonly string[], over: readonly string[]): string[] {
  const name = (entry: string): string => (entry.includes('=') ? entry.slice(0, entry.indexOf('=')) : entry);
  const replaced = new Set(over.map(name));
  return [...base.filter((e) => !replaced.has(name(e))), ...over];
}
