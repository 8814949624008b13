/**
 * The image outputs: `oci` and `docker` tarballs, and `image` (kept in
 * kiln's content store under its name and, with push, sent to a registry in
 * its finalize step). Each builds the image of the result (see image.ts),
 * sharing new layer blobs with the other outputs of the solve, and then
 * writes or pushes it.
 */
import { formatReference, type ImageReference, parseReference } from '../content/reference.js';
import { buildImage, type BuiltImage } from './image.js';
import { parseNames } from './image-names.js';
import type { BaseImage, ExportContext, Exporter, ExportSource, ImageOutputOptions } from './types.js';


/** `type=oci`: an OCI image layout tarball, with an index entry per name. */
export const ociExporter: Exporter<'oci'> = {
  type: 'oci',
  async export(result, output, ctx) {
    const targets = output.name === undefined ? [] : parseNames(output.name);
    const image = await build(result, output, true, ctx);
    const { writeOciArchive } = await import('./image-archive.js');
    const entries = targets.length === 0 ? [{ manifest: image.manifest }] : targets.map((target) => ({ manifest: image.manifest, name: formatReference(target) }));
    await writeOciArchive(entries, ctx.content, output.dest, { signal: ctx.signal, onBytes: bytesWritten(ctx) });
    return { digest: image.manifest.digest, descriptor: image.manifest };
  },
};

/** `type=docker`: a docker-archive tarball, what `docker load` reads, tagged with every name. */
export const dockerExporter: Exporter<'docker'> = {
  type: 'docker',
  async export(result, output, ctx) {
    const targets = parseNames(output.name);
    const image = await build(result, output, false, ctx);
    const { writeDockerArchive } = await import('./image-archive.js');
    await writeDockerArchive(
      targets.map((target) => ({ manifest: image.manifest, name: formatReference(target) })),
      ctx.content,
      output.dest,
      { signal: ctx.signal, onBytes: bytesWritten(ctx) },
    );
    return { digest: image.manifest.digest, descriptor: image.manifest };
  },
};

/** `type=image`: the image kept under each name; with `push=true`, pushed to each once every output is written. */
export const imageExporter: Exporter<'image'> = {
  type: 'image',
  async export(result, output, ctx) {
    const targets = parseNames(output.name);
    const image = await build(result, output, true, ctx);
    for (const target of targets) ctx.content.records.images.put(formatReference(target), { manifest: image.manifest, size: image.size, createdAt: Date.now() });
    const digest = image.manifest.digest;
    if (output.push !== true) return { digest, descriptor: image.manifest };
    return {
      digest,
      descriptor: image.manifest,
      // One name after another: the blobs a registry got for the first name are found there (HEAD) for the next.
      finalize: async () => {
        for (const target of targets) await push({ ref: target, image, base: result.image.base, insecure: output.insecure === true }, ctx);
      },
    };
  },
};

function build(result: ExportSource, output: ImageOutputOptions, ociDefault: boolean, ctx: ExportContext): Promise<BuiltImage> {
  const format = {
    compression: output.compression ?? 'gzip',
    ...(output.compressionLevel === undefined ? {} : { compressionLevel: output.compressionLevel }),
    ociMediaTypes: output.ociMediaTypes ?? ociDefault,
    ...(output.sourceDateEpoch === undefined ? {} : { sourceDateEpoch: output.sourceDateEpoch }),
    ...(output.rewriteTimestamp === undefined ? {} : { rewriteTimestamp: output.rewriteTimestamp }),
  } as const;
  return buildImage({ ref: result.ref, image: result.image, format }, ctx);
}

/** Counts an archive's bytes as they are written. */
function bytesWritten(ctx: ExportContext): (total: number, done: boolean) => void {
  return (total, done) => ctx.report('bytes written', total, { done });
}

interface Push {
  readonly ref: ImageReference;
  readonly image: BuiltImage;
  readonly base: BaseImage | undefined;
  /** registry.insecure=true: plain HTTP for this push's host only. */
  readonly insecure: boolean;
}

/** Pushes the layers the registry lacks, the config, then the manifest under the tag (or digest). */
async function push({ ref, image, base, insecure }: Push, ctx: ExportContext): Promise<void> {
  const { signal } = ctx;
  const registry = await ctx.registry(insecure ? [ref.domain] : undefined);
  // Layers of a base image in the same registry can be mounted across repositories instead of uploaded.
  const baseRef = base === undefined || !base.name.startsWith(`${ref.domain}/`) ? undefined : parseReference(base.name);
  const total = image.layers.length + 1;
  // Bytes are counted per blob sent (or found in the registry already): what a person watches on a slow link.
  const totalBytes = image.layers.reduce((n, l) => n + l.size, 0) + image.configDescriptor.size + image.manifest.size;
  let pushed = 0;
  let bytes = 0;
  for (const layer of image.layers) {
    await registry.pushBlob(ref, layer, ctx.content, { ...(baseRef === undefined ? {} : { mountFrom: baseRef }), signal });
    ctx.report('blobs pushed', ++pushed, { total });
    ctx.report('bytes pushed', (bytes += layer.size), { total: totalBytes });
  }
  await registry.pushBlob(ref, image.configDescriptor, ctx.content, { signal });
  await registry.pushManifest(ref, ref.tag ?? image.manifest.digest, image.manifest.mediaType, image.manifestBytes, signal);
  ctx.report('blobs pushed', ++pushed, { total, done: true });
  ctx.report('bytes pushed', totalBytes, { total: totalBytes, done: true });
}
