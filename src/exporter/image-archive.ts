/**
 * Image archives: images from kiln's content store written as one tar, in the
 * two formats other tools load.
 *
 * `type=oci` is an OCI image layout (image-spec `image-layout.md`) as a tar:
 * `oci-layout`, `index.json` with one entry per image, and every blob under
 * `blobs/sha256/HEX`.
 *
 * `type=docker` is the same layout plus the two files `docker load` reads:
 * `manifest.json` (`[{Config, RepoTags, Layers}]`, paths into the tar) and
 * the legacy `repositories`. This is the shape `docker save` has written since
 * Docker 25, so one file loads with `docker load`, `skopeo docker-archive:`
 * and `skopeo oci-archive:` alike.
 *
 * Layers go in as the store holds them (gzip as a rule), not decompressed:
 * `docker load` runs every layer file through its decompressor, which detects
 * gzip and zstd by their magic bytes, and checks the result against the
 * config's diff_ids; containers/image (skopeo, podman) decompresses
 * docker-archive layers the same way. Keeping the blobs as they are keeps
 * their digests (the manifest in the archive stays valid) and lets each layer
 * stream from the store untouched.
 *
 * Archives are deterministic: entries in a fixed order (metadata files, then
 * blobs in the order images name them, each once), mtime 0, owner 0:0,
 * modes 0644 and 0755; the same images give the same bytes.
 */
import { Readable } from 'node:stream';
import type { ContentStore } from '../content/store.js';
import { type Descriptor, type ImageIndex, type ImageManifest, isManifestMediaType, MEDIA_TYPES, REF_NAME_ANNOTATION } from '../content/types.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import { bodyPadding, encodeTarHeader, END_OF_ARCHIVE, type TarHeader } from '../fs/tar-header.js';
import { writeArchiveOutput } from './staging.js';
import type { ExportOptions } from './types.js';

/** One image to put in an archive. */
export interface ArchiveImage {
  /** The image manifest blob (in the store), OCI or Docker media type. */
  readonly manifest: Descriptor;
  /** The full reference `host/repo:tag`, normalised by the caller; required for docker, optional for oci. */
  readonly name?: string;
}

/** The annotation containerd, BuildKit and Docker put the full image name in. */
const IMAGE_NAME_ANNOTATION = 'io.containerd.image.name';

/**
 * Writes `images` as an OCI image layout tarball to `dest` (a path, written
 * whole or not at all, or a stream, which is ended after the archive).
 *
 * A named image's index.json entry carries the full name in
 * `io.containerd.image.name` and only its tag in
 * `org.opencontainers.image.ref.name`, as containerd, BuildKit and Docker
 * write it. The image-spec lets ref.name be a whole reference, but the tools
 * that address an image in a layout by it take `PATH:REF` and split at a
 * colon (`skopeo oci-archive:FILE:latest`, `umoci --image DIR:latest`), which
 * a name such as `host:5000/repo:tag` would break.
 */
export async function writeOciArchive(
  images: readonly ArchiveImage[],
  store: ContentStore,
  dest: string | NodeJS.WritableStream,
  options: ExportOptions = {},
): Promise<void> {
  await writeArchive('oci', images, store, dest, options);
}

/**
 * Writes `images` as a docker-archive tarball (what `docker load` reads) to
 * `dest`. Every image needs a name with a tag: `docker load` rejects RepoTags
 * without one.
 */
export async function writeDockerArchive(
  images: readonly ArchiveImage[],
  store: ContentStore,
  dest: string | NodeJS.WritableStream,
  options: ExportOptions = {},
): Promise<void> {
  await writeArchive('docker', images, store, dest, options);
}

type ArchiveFormat = 'oci' | 'docker';

/** What goes in the archive: small metadata files, then blobs streamed from the store. */
interface ArchiveContents {
  readonly files: readonly (readonly [name: string, body: Buffer])[];
  readonly blobs: readonly Descriptor[];
}

async function writeArchive(
  format: ArchiveFormat,
  images: readonly ArchiveImage[],
  store: ContentStore,
  dest: string | NodeJS.WritableStream,
  options: ExportOptions,
): Promise<void> {
  const { signal } = options;
  await writeArchiveOutput(
    `${format} image archive`,
    async () => {
      const contents = await planArchive(format, images, store);
      signal?.throwIfAborted();
      return Readable.from(archiveChunks(contents, store, signal));
    },
    dest,
    options,
  );
}

/** Reads each image's manifest and checks every blob it names is in the store at its size. */
async function planArchive(format: ArchiveFormat, images: readonly ArchiveImage[], store: ContentStore): Promise<ArchiveContents> {
  if (images.length === 0) throw new KilnError(ERROR_CODES.OUTPUT, `${format === 'oci' ? 'an OCI' : 'a docker'} image archive needs at least one image`);
  const blobs = new Map<string, Descriptor>();
  const index: Descriptor[] = [];
  const dockerManifest: { Config: string; RepoTags: string[]; Layers: string[] }[] = [];
  const repositories: Record<string, Record<string, string>> = {};

  for (const image of images) {
    const shown = image.name ?? image.manifest.digest;
    if (!isManifestMediaType(image.manifest.mediaType)) {
      throw new KilnError(ERROR_CODES.IMAGE, `image ${shown}: ${image.manifest.digest} has media type ${image.manifest.mediaType}, not an image manifest`);
    }
    await checkBlob(store, image.manifest, `the manifest of image ${shown}`);
    const manifest = await store.readJson<ImageManifest>(image.manifest.digest);
    if (typeof manifest.config?.digest !== 'string' || !Array.isArray(manifest.layers)) {
      throw new KilnError(ERROR_CODES.IMAGE, `image ${shown}: manifest ${image.manifest.digest} has no config or no layers list`);
    }
    await checkBlob(store, manifest.config, `the config of image ${shown}`);
    for (const [i, layer] of manifest.layers.entries()) await checkBlob(store, layer, `layer ${i + 1} of image ${shown}`);
    for (const desc of [image.manifest, manifest.config, ...manifest.layers]) if (!blobs.has(desc.digest)) blobs.set(desc.digest, desc);

    const reference = image.name === undefined ? undefined : splitReference(image.name);
    const annotations: Record<string, string> = {};
    if (image.name !== undefined) annotations[IMAGE_NAME_ANNOTATION] = image.name;
    if (reference?.tag !== undefined) annotations[REF_NAME_ANNOTATION] = reference.tag;
    index.push({
      mediaType: image.manifest.mediaType,
      digest: image.manifest.digest,
      size: image.manifest.size,
      ...(image.name === undefined ? {} : { annotations }),
    });

    if (format === 'docker') {
      if (image.name === undefined || reference?.tag === undefined) {
        throw new KilnError(ERROR_CODES.OUTPUT, `a docker archive needs each image named REPOSITORY:TAG (docker load requires a tag); got ${image.name === undefined ? 'no name' : `"${image.name}"`}`);
      }
      // One entry per image, with all its tags, as `docker save` writes them.
      const same = dockerManifest.find((m) => m.Config === blobName(manifest.config) && m.Layers.join('\n') === manifest.layers.map(blobName).join('\n'));
      if (same === undefined) dockerManifest.push({ Config: blobName(manifest.config), RepoTags: [image.name], Layers: manifest.layers.map(blobName) });
      else if (!same.RepoTags.includes(image.name)) same.RepoTags.push(image.name);
      // docker load only reads `repositories` for archives without manifest.json;
      // it maps a tag to the top layer's id, here the hex of its blob.
      const top = manifest.layers.at(-1);
      if (top !== undefined) (repositories[reference.repository] ??= {})[reference.tag] = hexOf(top);
    }
  }

  const indexJson: ImageIndex = { schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests: index };
  const files: [string, Buffer][] = [
    ['oci-layout', json({ imageLayoutVersion: '1.0.0' })],
    ['index.json', json(indexJson)],
  ];
  if (format === 'docker') files.push(['manifest.json', json(dockerManifest)], ['repositories', json(repositories)]);
  return { files, blobs: [...blobs.values()] };
}

/** Fails unless the store holds `desc` at the size the descriptor gives (the tar header is written before the body). */
async function checkBlob(store: ContentStore, desc: Descriptor, what: string): Promise<void> {
  const size = await store.size(desc.digest);
  if (size === undefined) throw new KilnError(ERROR_CODES.CONTENT, `${what} (${desc.digest}) is not in kiln's content store`);
  if (size !== desc.size) throw new KilnError(ERROR_CODES.CONTENT, `${what} (${desc.digest}) is ${size} bytes in the store, but its descriptor says ${desc.size}`);
}

/** The archive's bytes: dirs and metadata files, then each blob streamed from the store, then the end marker. */
async function* archiveChunks(contents: ArchiveContents, store: ContentStore, signal: AbortSignal | undefined): AsyncGenerator<Buffer> {
  for (const [name, body] of contents.files) {
    yield Buffer.concat([encodeTarHeader(entryHeader(name, 'file', body.length)), body, bodyPadding(BigInt(body.length))]);
  }
  yield encodeTarHeader(entryHeader('blobs', 'dir', 0));
  yield encodeTarHeader(entryHeader('blobs/sha256', 'dir', 0));
  for (const desc of contents.blobs) {
    signal?.throwIfAborted();
    yield encodeTarHeader(entryHeader(blobName(desc), 'file', desc.size));
    const body: AsyncIterable<Buffer> = await store.open(desc.digest);
    let written = 0;
    for await (const chunk of body) {
      written += chunk.length;
      if (written > desc.size) break;
      yield chunk;
    }
    // The header promised desc.size bytes: anything else would corrupt every entry after it.
    if (written !== desc.size) throw new KilnError(ERROR_CODES.CONTENT, `blob ${desc.digest} changed size while it was being archived`);
    yield bodyPadding(BigInt(desc.size));
  }
  yield END_OF_ARCHIVE;
}

function entryHeader(name: string, type: 'file' | 'dir', size: number): TarHeader {
  return { name, type, mode: type === 'dir' ? 0o755 : 0o644, uid: 0, gid: 0, size: BigInt(size), mtimeNs: 0n };
}

function blobName(desc: Descriptor): string {
  return `blobs/sha256/${hexOf(desc)}`;
}

function hexOf(desc: Descriptor): string {
  return desc.digest.slice('sha256:'.length);
}

function json(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value), 'utf8');
}

/**
 * `host/repo:tag[@digest]` as repository and tag. The tag is what follows the
 * last colon after the last slash, so a registry port is never taken for it.
 */
function splitReference(name: string): { repository: string; tag: string | undefined } {
  const withoutDigest = name.split('@', 1)[0] ?? name;
  const colon = withoutDigest.lastIndexOf(':');
  if (colon <= withoutDigest.lastIndexOf('/')) return { repository: withoutDigest, tag: undefined };
  return { repository: withoutDigest.slice(0, colon), tag: withoutDigest.slice(colon + 1) };
}

