/**
 * Reading an OCI image layout directory (image-spec `image-layout.md`): the
 * `oci-layout` marker, `index.json`, and blobs under `blobs/sha256/HEX`.
 * This is what an `oci-layout://NAME:TAG` or `oci-layout://NAME@sha256:...`
 * source reads, NAME bound to a directory by `--oci-layout NAME=DIR`.
 *
 * Nothing in the directory is trusted: every blob read is checked against
 * its digest (and size, when a descriptor gives one) before it is used, and
 * the manifest, config and layers reach kiln's content store only through
 * its verifying write.
 */
import { constants as fsConstants } from 'node:fs';
import { type FileHandle, open, readFile, realpath } from 'node:fs/promises';
import path from 'node:path';
import { type Digest, isDigest, sha256 } from '../digest.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import type { ContentStore } from './store.js';
import { formatPlatform, platformMatches } from './platform.js';
import {
  configLayersProblem,
  type Descriptor,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  type ImagePlatform,
  isIndexMediaType,
  isManifestMediaType,
  MEDIA_TYPES,
  REF_NAME_ANNOTATION,
} from './types.js';

/** What an `oci-layout://NAME@sha256:...` or `oci-layout://NAME:TAG` asks for; the digest wins when both are given. */
export interface OciLayoutSelector {
  readonly tag?: string;
  readonly digest?: Digest;
}

/** The image a selector resolved to, for one platform. */
export interface ResolvedLayoutImage {
  /** Of the platform's image manifest. */
  readonly descriptor: Descriptor;
  readonly manifest: ImageManifest;
  readonly config: ImageConfig;
}

/**
 * Resolves `selector` in the layout at `dir` to the image manifest for
 * `platform`, following indexes (nested ones too), and copies that manifest
 * and its config into `store`, verified. Layers are left for
 * importLayoutBlob.
 *
 * A tag matches an index.json entry whose `org.opencontainers.image.ref.name`
 * is the tag, or is a full `name:tag` ending in it (skopeo writes whatever
 * name it is given). A digest may be that of any index or manifest blob in
 * the layout, listed in index.json or not.
 */
export async function resolveOciLayout(
  dir: string,
  selector: OciLayoutSelector,
  platform: ImagePlatform,
  store: ContentStore,
  signal?: AbortSignal,
): Promise<ResolvedLayoutImage> {
  const shown = `OCI layout ${dir} (${selector.digest ?? (selector.tag === undefined ? 'no tag or digest' : `tag ${selector.tag}`)})`;
  await checkLayoutMarker(dir, shown);
  const index = await readLayoutJson<ImageIndex>(path.join(dir, 'index.json'), shown);
  if (!Array.isArray(index.manifests)) throw new KilnError(ERROR_CODES.IMAGE, `${shown}: index.json has no manifests list`);

  let candidates: readonly Descriptor[];
  if (selector.digest !== undefined) {
    const listed = index.manifests.find((desc) => desc.digest === selector.digest);
    candidates = [listed ?? (await describeUnlisted(dir, selector.digest, shown))];
  } else if (selector.tag !== undefined) {
    const tag = selector.tag;
    candidates = index.manifests.filter((desc) => refNameMatches(desc.annotations?.[REF_NAME_ANNOTATION], tag));
    if (candidates.length === 0) {
      const tags = index.manifests.flatMap((desc) => desc.annotations?.[REF_NAME_ANNOTATION] ?? []);
      const has = tags.length === 0 ? 'it has no tagged images' : `its tags: ${[...new Set(tags)].join(', ')}`;
      throw new KilnError(ERROR_CODES.IMAGE, `${shown}: no image tagged "${tag}"; ${has}`);
    }
  } else {
    throw new KilnError(ERROR_CODES.IMAGE, `${shown}: give a tag or a digest`);
  }

  // Several tagged entries (one per platform) are chosen among like an index's manifests.
  let descriptor = pickPlatform(candidates, platform, shown);
  while (isIndexMediaType(descriptor.mediaType)) {
    signal?.throwIfAborted();
    const nested = parseJson<ImageIndex>(await readVerifiedBlob(dir, descriptor), `index ${descriptor.digest}`, shown);
    if (!Array.isArray(nested.manifests)) throw new KilnError(ERROR_CODES.IMAGE, `${shown}: index ${descriptor.digest} has no manifests list`);
    descriptor = pickPlatform(nested.manifests, platform, shown);
  }
  if (!isManifestMediaType(descriptor.mediaType)) {
    throw new KilnError(ERROR_CODES.IMAGE, `${shown}: ${descriptor.digest} has media type ${descriptor.mediaType}, not an image manifest or index`);
  }

  await importLayoutBlob(dir, descriptor, store, signal);
  const manifest = await store.readJson<ImageManifest>(descriptor.digest);
  if (typeof manifest.config?.digest !== 'string' || !isDigest(manifest.config.digest) || !Array.isArray(manifest.layers)) {
    throw new KilnError(ERROR_CODES.IMAGE, `${shown}: manifest ${descriptor.digest} has no valid config descriptor or layers list`);
  }
  await importLayoutBlob(dir, manifest.config, store, signal);
  const config = await store.readJson<ImageConfig>(manifest.config.digest);
  const problem = configLayersProblem(manifest, config);
  if (problem !== undefined) throw new KilnError(ERROR_CODES.IMAGE, `${shown}: ${problem}`);
  return { descriptor, manifest, config };
}

/** Copies a blob from DIR/blobs/sha256/HEX into `store`, verified against `desc`; a mismatch stores nothing (E_CONTENT). */
export async function importLayoutBlob(dir: string, desc: Descriptor, store: ContentStore, signal?: AbortSignal): Promise<void> {
  if (await store.has(desc.digest)) return;
  const handle = await openBlob(dir, desc.digest, desc.size);
  // The stream closes the handle when it ends or fails; the store's write checks the signal between chunks.
  const stream = handle.createReadStream();
  try {
    await store.write(stream, { digest: desc.digest, size: desc.size, what: `blob ${desc.digest} in OCI layout ${dir}` }, signal);
  } finally {
    stream.destroy();
  }
}

async function checkLayoutMarker(dir: string, shown: string): Promise<void> {
  let text: string;
  try {
    text = await readFile(path.join(dir, 'oci-layout'), 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'it has no oci-layout file (is it an OCI image layout directory?)' : (err as Error).message;
    throw new KilnError(ERROR_CODES.IMAGE, `${shown}: ${why}`, { cause: err });
  }
  const version = parseJson<{ imageLayoutVersion?: unknown }>(Buffer.from(text), 'oci-layout', shown).imageLayoutVersion;
  // The spec's one version is 1.0.0; a later 1.x keeps the layout we read.
  if (typeof version !== 'string' || !/^1\.\d+\.\d+$/.test(version)) {
    throw new KilnError(ERROR_CODES.IMAGE, `${shown}: unsupported imageLayoutVersion ${JSON.stringify(version)} in oci-layout (kiln reads 1.x)`);
  }
}

async function readLayoutJson<T>(file: string, shown: string): Promise<T> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    throw new KilnError(ERROR_CODES.IMAGE, `${shown}: cannot read ${path.basename(file)}: ${(err as Error).message}`, { cause: err });
  }
  return parseJson<T>(bytes, path.basename(file), shown);
}

function parseJson<T>(bytes: Buffer, what: string, shown: string): T {
  try {
    return JSON.parse(bytes.toString('utf8')) as T;
  } catch (err) {
    throw new KilnError(ERROR_CODES.IMAGE, `${shown}: ${what} is not valid JSON`, { cause: err });
  }
}

/** ref.name is the tag itself, or a full reference whose tag (after the last colon past the last slash) it is. */
function refNameMatches(refName: string | undefined, tag: string): boolean {
  if (refName === undefined) return false;
  if (refName === tag) return true;
  return refName.endsWith(`:${tag}`) && refName.lastIndexOf(':') > refName.lastIndexOf('/');
}

/** A descriptor for a blob not listed in index.json, its media type read from the blob itself. */
async function describeUnlisted(dir: string, digest: Digest, shown: string): Promise<Descriptor> {
  const bytes = await readVerifiedBlob(dir, { digest });
  const doc = parseJson<{ mediaType?: unknown; manifests?: unknown; layers?: unknown }>(bytes, `blob ${digest}`, shown);
  // mediaType is optional in both documents; which list it has tells them apart.
  const mediaType =
    typeof doc.mediaType === 'string'
      ? doc.mediaType
      : Array.isArray(doc.manifests)
        ? MEDIA_TYPES.ociIndex
        : Array.isArray(doc.layers)
          ? MEDIA_TYPES.ociManifest
          : 'unknown';
  return { mediaType, digest, size: bytes.length };
}

/**
 * The first of `descs` for `wanted`: same os and architecture, and same
 * variant when one is wanted (arm64 without a variant is v8). A lone entry
 * without a platform matches whatever is wanted.
 */
function pickPlatform(descs: readonly Descriptor[], wanted: ImagePlatform, shown: string): Descriptor {
  const only = descs.length === 1 ? descs[0] : undefined;
  if (only !== undefined && only.platform === undefined) return only;
  const found = descs.find((desc) => desc.platform !== undefined && platformMatches(wanted, desc.platform));
  if (found !== undefined) return found;
  const has = descs.map((desc) => (desc.platform === undefined ? `${desc.digest} (no platform)` : formatPlatform(desc.platform)));
  throw new KilnError(ERROR_CODES.IMAGE, `${shown}: no manifest for platform ${formatPlatform(wanted)}; the image has ${has.join(', ')}`);
}

/** Indexes and manifests are small; one larger than this is refused rather than read into memory. */
const MAX_DOCUMENT_BYTES = 4 * 1024 * 1024;

/**
 * Opens a blob of the layout, `blobs/sha256/HEX`; the store's Digest type is
 * sha256 only. A layout is untrusted input: the blob must be a regular file
 * that really is inside the layout (no symlink out of it, no device or fifo
 * that never ends), and when its descriptor gives a size, the file must have
 * that size before a byte of it is read.
 */
async function openBlob(dir: string, digest: Digest, expectedSize?: number): Promise<FileHandle> {
  if (!isDigest(digest)) throw new KilnError(ERROR_CODES.CONTENT, `OCI layout ${dir}: ${digest} is not a sha256 digest kiln can read`);
  const file = path.join(dir, 'blobs', 'sha256', digest.slice('sha256:'.length));
  const refuse = (why: string): KilnError => new KilnError(ERROR_CODES.CONTENT, `blob ${digest} of OCI layout ${dir} ${why} (looked at ${file})`);
  let handle: FileHandle;
  try {
    // O_NOFOLLOW: a symlink in place of the blob fails with ELOOP; O_NONBLOCK: a fifo does not hang the open.
    handle = await open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'is missing' : code === 'ELOOP' ? 'is a symlink, not a regular file in the layout' : `cannot be read: ${(err as Error).message}`;
    throw new KilnError(ERROR_CODES.CONTENT, `blob ${digest} of OCI layout ${dir} ${why} (looked for ${file})`, { cause: err });
  }
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) throw refuse('is not a regular file');
    // blobs/ or blobs/sha256/ may themselves be symlinks: the file must still be inside the layout.
    const [realDir, realFile] = await Promise.all([realpath(dir), realpath(file)]);
    if (path.relative(realDir, realFile).startsWith('..')) throw refuse(`is outside the layout (it resolves to ${realFile})`);
    if (expectedSize !== undefined && stats.size !== expectedSize) throw refuse(`has ${stats.size} bytes, but its descriptor says ${expectedSize}`);
    return handle;
  } catch (err) {
    await handle.close();
    throw err;
  }
}

/** A small blob (an index or manifest) read whole and checked against its digest and, when known, its size. */
async function readVerifiedBlob(dir: string, desc: { readonly digest: Digest; readonly size?: number }): Promise<Buffer> {
  const handle = await openBlob(dir, desc.digest, desc.size);
  let bytes: Buffer;
  try {
    const { size } = await handle.stat();
    if (size > MAX_DOCUMENT_BYTES) {
      throw new KilnError(ERROR_CODES.CONTENT, `blob ${desc.digest} of OCI layout ${dir} has ${size} bytes: an index or manifest over ${MAX_DOCUMENT_BYTES} bytes is refused`);
    }
    bytes = await handle.readFile();
  } finally {
    await handle.close();
  }
  const digest = sha256(bytes);
  if (digest !== desc.digest || (desc.size !== undefined && bytes.length !== desc.size)) {
    const got = digest !== desc.digest ? `digest ${digest}` : `${bytes.length} bytes, not ${desc.size}`;
    throw new KilnError(ERROR_CODES.CONTENT, `blob ${desc.digest} of OCI layout ${dir} does not match its descriptor: got ${got}`);
  }
  return bytes;
}
