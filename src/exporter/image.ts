/**
 * Assembling an image from a solved result: one layer per snapshot layer
 * (a base image's layers are reused as the blobs they came in, and a layer
 * kiln already compressed the same way is reused too), an image config
 * (the base image's, then the definition's `image.config` over it), and a
 * manifest, all written to the content store.
 *
 * The config's created time is the solve's (see ResultImage.created), so
 * the outputs of one build are one image whatever order they are written in.
 * With SOURCE_DATE_EPOCH, the config's created time and history use it and
 * (unless rewrite-timestamp=false) every file time in new layers is clamped
 * to it, so two clean builds of the same definition give the same digest.
 */
import type { ResultRef } from '../cache/types.js';
import { type Descriptor, type HistoryEntry, type ImageConfig, type ImageManifest, type ImageRunConfig, layerCompression, MEDIA_TYPES } from '../content/types.js';
import type { Digest } from '../digest.js';
import { DEFAULT_PATH_ENV, type ImageConfig as LlbImageConfig } from '../llb/types.js';
import { layerBlob } from './image-layers.js';
import type { ExportContext, ImageFormat, LayerBlob, ResultImage } from './types.js';

export type { ImageFormat } from './types.js';

export interface BuildImageOptions {
  readonly ref: ResultRef;
  /** The platform, `image.config` and resolved `image.base` of the definition. */
  readonly image: ResultImage;
  readonly format: ImageFormat;
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

/**
 * Builds the image of `ref` into the content store, reporting the new
 * layers it compressed (`layers compressed`).
 */
export async function buildImage(options: BuildImageOptions, ctx: ExportContext): Promise<BuiltImage> {
  const { format } = options;
  const snapshotLayers = options.ref === null ? [] : await options.ref.layers();
  const layers: LayerBlob[] = [];
  let compressed = 0;
  // One at a time: each export already keeps zlib busy, and layers are written in order anyway.
  for (const layer of snapshotLayers) {
    const blob = await layerBlob(layer, format, ctx);
    if (blob.exported) ctx.report('layers compressed', ++compressed);
    layers.push(blob);
  }
  ctx.report('layers compressed', compressed, { done: true });

  // The solve's time, not this output's: every image output of one build is one image.
  const created = format.sourceDateEpoch === undefined ? options.image.created : new Date(format.sourceDateEpoch * 1000).toISOString();
  const config = imageConfig({ ...options, diffIDs: layers.map((l) => l.diffID), created });
  const configBlob = await ctx.content.writeJson(config);
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
  const manifestBlob = await ctx.content.writeJson(manifest);
  return {
    manifest: { mediaType: manifest.mediaType as string, digest: manifestBlob.digest, size: manifestBlob.size },
    manifestBytes: manifestBlob.bytes,
    configDescriptor,
    layers: manifest.layers,
    size: manifestBlob.size + configBlob.size + manifest.layers.reduce((n, l) => n + l.size, 0),
  };
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

/**
 * What an image's config starts from when nothing gives one (no `image`, no
 * `--image-config`): as BuildKit's exporter writes it for a result without a
 * config, the default PATH (not on Windows) and `/` as the working directory.
 */
function defaultConfig({ os, architecture }: ResultImage['platform']): ImageConfig {
  const config = { ...(os === 'windows' ? {} : { Env: [DEFAULT_PATH_ENV] }), WorkingDir: '/' };
  return { architecture, os, config, rootfs: { type: 'layers', diff_ids: [] } };
}

/** The image config: the base's (unknown fields kept), then the definition's fields over it. */
function imageConfig(options: BuildImageOptions & { diffIDs: readonly Digest[]; created: string }): ImageConfig {
  const { given } = options.image;
  const base = options.image.base?.config ?? given ?? (options.image.config === undefined ? defaultConfig(options.image.platform) : undefined);
  const baseDiffIDs = base?.rootfs?.diff_ids ?? [];
  const onBase = baseDiffIDs.length > 0 && baseDiffIDs.every((d, i) => options.diffIDs[i] === d);
  // The base's history describes its layers; new layers get one entry each.
  // A frontend's config already has an entry for every step (RUN, COPY, ...):
  // kept as it is when its layer entries are as many as the result's layers.
  const givenLayers = (given?.history ?? []).filter((h) => h.empty_layer !== true).length;
  const complete = given !== undefined && givenLayers === options.diffIDs.length;
  const history: HistoryEntry[] = complete || onBase ? [...(base?.history ?? [])] : [];
  const newLayers = complete ? 0 : options.diffIDs.length - (onBase ? baseDiffIDs.length : 0);
  for (let i = 0; i < newLayers; i++) history.push({ created: options.created, created_by: 'kiln build', comment: 'kiln' });
  const { platform } = options.image;
  return {
    ...(base ?? {}),
    created: options.created,
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant === undefined ? {} : { variant: platform.variant }),
    config: runConfig(base?.config ?? {}, options.image.config ?? {}),
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
  return out;
}

/**
 * The base's env with each of `over`'s entries set in turn, as Dockerfile's
 * ENV sets them (BuildKit's addEnv): a variable the env already has is
 * replaced where it stands, a new one is appended.
 */
function mergeEnv(base: readonly string[], over: readonly string[]): string[] {
  const name = (entry: string): string => (entry.includes('=') ? entry.slice(0, entry.indexOf('=')) : entry);
  const out = [...base];
  const at = new Map<string, number>();
  out.forEach((entry, i) => {
    if (!at.has(name(entry))) at.set(name(entry), i);
  });
  for (const entry of over) {
    const i = at.get(name(entry));
    if (i === undefined) at.set(name(entry), out.push(entry) - 1);
    else out[i] = entry;
  }
  return out;
}
