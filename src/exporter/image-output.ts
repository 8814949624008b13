/**
 * The image outputs: `oci` and `docker` tarballs, and `image` (kept in
 * kiln's content store under its name and, with push, sent to a registry).
 * Each builds the image of the result (see image.ts) and then writes or
 * pushes it.
 */
import type { ResultRef } from '../cache/types.js';
import type { ImageOutputOptions, OutputSpec } from '../client/solve.js';
import type { Session } from '../client/session.js';
import { formatReference, type ImageReference, parseReference } from '../content/reference.js';
import type { ImagePlatform } from '../content/types.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import type { Definition } from '../llb/types.js';
import { hostPlatform } from '../llb/load.js';
import { imagePlatform } from '../source/image/resolve.js';
import type { ImageContext, ResolvedImage } from '../source/image/types.js';
import type { Worker } from '../worker/types.js';
import { buildImage, type BuiltImage, type ImageFormat } from './image.js';

type ImageOutput = Extract<OutputSpec, { type: 'oci' | 'docker' | 'image' }>;

export interface ExportImageOptions {
  readonly definition: Definition;
  readonly images: ImageContext;
  readonly worker: Worker;
  readonly session: Session;
  readonly ref: ResultRef;
  readonly output: ImageOutput;
  readonly signal?: AbortSignal;
}

/** Builds the result's image and writes it where the output says. */
export async function exportImage(options: ExportImageOptions): Promise<void> {
  const { output, images, signal } = options;
  const target = output.name === undefined ? undefined : parseName(output.name);
  const base = await baseImage(options);
  const image = await buildImage({
    ref: options.ref,
    content: images.content,
    platform: resultPlatform(options.definition),
    ...(options.definition.image === undefined ? {} : { config: options.definition.image.config }),
    ...(base === undefined ? {} : { baseConfig: base.config }),
    format: imageFormat(output, output.type !== 'docker'),
    ...(signal === undefined ? {} : { signal }),
  });
  switch (output.type) {
    case 'oci': {
      const { writeOciArchive } = await import('./image-archive.js');
      await writeOciArchive([{ manifest: image.manifest, ...(target === undefined ? {} : { name: formatReference(target) }) }], images.content, output.dest, signal);
      break;
    }
    case 'docker': {
      const { writeDockerArchive } = await import('./image-archive.js');
      await writeDockerArchive([{ manifest: image.manifest, name: formatReference(target as ImageReference) }], images.content, output.dest, signal);
      break;
    }
    case 'image': {
      const ref = target as ImageReference;
      images.content.records.images.put(formatReference(ref), { manifest: image.manifest, size: image.size, createdAt: Date.now() });
      if (output.push === true) await push(options, ref, image, base);
      break;
    }
  }
}

/** Pushes the config, the layers the registry lacks, then the manifest under the tag (or digest). */
async function push(options: ExportImageOptions, ref: ImageReference, image: BuiltImage, base: ResolvedImage | undefined): Promise<void> {
  const { images, signal } = options;
  // registry.insecure=true on the output allows plain HTTP for this push's host only.
  const insecure = options.output.type === 'image' && options.output.insecure === true;
  const registry = insecure
    ? new (await import('../content/registry/client.js')).RegistryClient({ insecureHosts: [ref.domain], logger: options.session.logger })
    : await images.registry();
  // Layers of a base image in the same registry can be mounted across repositories instead of uploaded.
  const baseRef = base === undefined || !base.name.startsWith(`${ref.domain}/`) ? undefined : parseReference(base.name);
  for (const layer of image.layers) {
    await registry.pushBlob(ref, layer, images.content, { ...(baseRef === undefined ? {} : { mountFrom: baseRef }), ...(signal === undefined ? {} : { signal }) });
  }
  await registry.pushBlob(ref, image.configDescriptor, images.content, signal === undefined ? {} : { signal });
  await registry.pushManifest(ref, ref.tag ?? image.manifest.digest, image.manifest.mediaType, image.manifestBytes, signal);
}

/** The config of `image.base`, resolved during the build (or now, when the result did not need it). */
async function baseImage(options: ExportImageOptions): Promise<ResolvedImage | undefined> {
  const baseName = options.definition.image?.base;
  if (baseName === undefined) return undefined;
  const known = options.images.resolved.get(baseName);
  if (known !== undefined) return known;
  const op = options.definition.ops.get(baseName);
  if (op === undefined || op.body.kind !== 'source') throw new KilnError(ERROR_CODES.INTERNAL, `image.base "${baseName}" is not a source op of the definition`);
  const { resolveImageSource } = await import('../source/image/source.js');
  return resolveImageSource({ ...op, body: op.body }, options.images, options.signal ?? new AbortController().signal);
}

/** The platform the image is for: the result op's. */
function resultPlatform(definition: Definition): ImagePlatform {
  const op = definition.result === null ? undefined : definition.ops.get(definition.result.op);
  return imagePlatform(op?.platform ?? hostPlatform());
}

function imageFormat(output: ImageOutputOptions, ociDefault: boolean): ImageFormat {
  return {
    compression: output.compression ?? 'gzip',
    ...(output.compressionLevel === undefined ? {} : { compressionLevel: output.compressionLevel }),
    ociMediaTypes: output.ociMediaTypes ?? ociDefault,
    ...(output.sourceDateEpoch === undefined ? {} : { sourceDateEpoch: output.sourceDateEpoch }),
    ...(output.rewriteTimestamp === undefined ? {} : { rewriteTimestamp: output.rewriteTimestamp }),
  };
}

function parseName(name: string): ImageReference {
  try {
    return parseReference(name);
  } catch (err) {
    throw new KilnError(ERROR_CODES.USAGE, `image name "${name}": ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}
