/**
 * Where a cache artifact (cache-format.ts) lives: a repository of a
 * registry (`type=registry,ref=REF`), or an OCI image layout directory
 * (`type=local,dest=DIR` / `src=DIR`, the artifact under a tag in its
 * index.json). Both read into and write from kiln's content store, every
 * blob verified against its digest on the way in.
 */
import { randomUUID } from 'node:crypto';
import { copyFile, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { type Digest, isDigest, sha256 } from '../digest.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import { type CacheDescription, parseCacheDescription } from './cache-format.js';
import { importLayoutBlob } from './oci-layout.js';
import { formatReference, type ImageReference } from './reference.js';
import type { RegistryClient, StreamedUpload } from './registry/client.js';
import type { ContentStore } from './store.js';
import { type Descriptor, type ImageIndex, MEDIA_TYPES, REF_NAME_ANNOTATION } from './types.js';

/** `--import-cache`: a registry reference or an OCI layout directory written by an export. */
export type CacheImportSpec = {
  /** false: a cache that cannot be read fails the build (CacheImportError) instead of a warning and a cold build. */
  readonly ignoreError?: boolean;
} & ({ readonly type: 'registry'; readonly ref: string; readonly insecure?: boolean } | { readonly type: 'local'; readonly src: string; readonly tag?: string });

/** A cache artifact read: its manifest's descriptor and its checked description. */
export interface LoadedCache {
  readonly descriptor: Descriptor;
  readonly description: CacheDescription;
}

/** One place a cache artifact is read from or written to. */
export interface CacheTarget {
  /** What messages call it: `registry 127.0.0.1:5000/app:cache`, `local /ci/cache`. */
  readonly shown: string;
  /** Reads and checks the artifact (manifest and description into the content store). */
  load(signal: AbortSignal): Promise<LoadedCache>;
  /** Puts one blob of the artifact into the content store (nothing when it is there). */
  fetchBlob(desc: Descriptor, signal: AbortSignal): Promise<void>;
  /** Writes one blob from the content store unless the target has it; `mountFrom` may spare the upload (registries). */
  pushBlob(desc: Descriptor, signal: AbortSignal, mountFrom?: ImageReference): Promise<'exists' | 'mounted' | 'uploaded'>;
  /** Writes the manifest last, under the target's tag. */
  pushManifest(bytes: Buffer, signal: AbortSignal): Promise<Digest>;
  /** Opens an upload that takes a blob's bytes while they are made (registries; a directory has no use for one). */
  startUpload?(signal: AbortSignal): Promise<StreamedUpload>;
}

/** A cache in a registry repository, under the reference's tag (default `latest`). */
export function registryCacheTarget(ref: ImageReference, registry: () => Promise<RegistryClient>, content: ContentStore): CacheTarget {
  const shown = `registry ${formatReference(ref)}`;
  const tag = ref.digest ?? ref.tag ?? 'latest';
  return {
    shown,
    async load(signal) {
      const client = await registry();
      const { descriptor, bytes } = await client.fetchManifest(ref, tag, signal);
      const manifest = parseJson(bytes, shown);
      const config = configOf(manifest, shown);
      await client.fetchBlob(ref, config, content, signal);
      return { descriptor, description: parseCacheDescription(manifest, await content.readBytes(config.digest), shown) };
    },
    async fetchBlob(desc, signal) {
      await (await registry()).fetchBlob(ref, desc, content, signal);
    },
    async pushBlob(desc, signal, mountFrom) {
      return (await registry()).pushBlob(ref, desc, content, { signal, ...(mountFrom === undefined ? {} : { mountFrom }) });
    },
    async pushManifest(bytes, signal) {
      return (await registry()).pushManifest(ref, tag, MEDIA_TYPES.ociManifest, bytes, signal);
    },
    async startUpload(signal) {
      return (await registry()).startUpload(ref, signal);
    },
  };
}

/** A cache in an OCI image layout directory, under `tag` in its index.json. */
export function localCacheTarget(dir: string, tag: string, content: ContentStore): CacheTarget {
  const shown = `local ${dir}`;
  const blobFile = (digest: Digest): string => path.join(dir, 'blobs', 'sha256', digest.slice('sha256:'.length));
  return {
    shown,
    async load(signal) {
      let index: ImageIndex;
      try {
        index = parseJson(await readFile(path.join(dir, 'index.json')), shown) as ImageIndex;
      } catch (err) {
        if (err instanceof KilnError) throw err;
        throw new KilnError(ERROR_CODES.CONTENT, `${shown}: no cache there (${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no index.json' : (err as Error).message})`, { cause: err });
      }
      const descriptor = (Array.isArray(index.manifests) ? index.manifests : []).find((m) => m.annotations?.[REF_NAME_ANNOTATION] === tag);
      if (descriptor === undefined) throw new KilnError(ERROR_CODES.CONTENT, `${shown}: no cache tagged "${tag}" in index.json`);
      await importLayoutBlob(dir, descriptor, content, signal);
      const manifest = parseJson(await content.readBytes(descriptor.digest), shown);
      const config = configOf(manifest, shown);
      await importLayoutBlob(dir, config, content, signal);
      return { descriptor, description: parseCacheDescription(manifest, await content.readBytes(config.digest), shown) };
    },
    fetchBlob: (desc, signal) => importLayoutBlob(dir, desc, content, signal),
    async pushBlob(desc) {
      const file = blobFile(desc.digest);
      const there = await stat(file).catch(() => undefined);
      if (there?.isFile() === true && there.size === desc.size) return 'exists';
      await mkdir(path.dirname(file), { recursive: true });
      // Copied beside its final name, then renamed: a reader never sees half a blob.
      const part = `${file}.${randomUUID()}.part`;
      try {
        await copyFile(content.path(desc.digest), part);
        await rename(part, file);
      } finally {
        await rm(part, { force: true });
      }
      return 'uploaded';
    },
    async pushManifest(bytes) {
      const digest = sha256(bytes);
      await mkdir(dir, { recursive: true });
      await atomicWrite(blobFile(digest), bytes);
      await atomicWrite(path.join(dir, 'oci-layout'), Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })));
      const old: Partial<ImageIndex> = await readFile(path.join(dir, 'index.json'))
        .then((b) => JSON.parse(b.toString('utf8')) as Partial<ImageIndex>)
        .catch(() => ({}));
      // Other tags stay; this tag now names the new manifest.
      const others = (Array.isArray(old.manifests) ? old.manifests : []).filter((m) => m.annotations?.[REF_NAME_ANNOTATION] !== tag);
      const entry: Descriptor = { mediaType: MEDIA_TYPES.ociManifest, digest, size: bytes.length, annotations: { [REF_NAME_ANNOTATION]: tag } };
      const index: ImageIndex = { schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests: [...others, entry] };
      await atomicWrite(path.join(dir, 'index.json'), Buffer.from(JSON.stringify(index)));
      return digest;
    },
  };
}

async function atomicWrite(file: string, bytes: Buffer): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const part = `${file}.${randomUUID()}.part`;
  try {
    await writeFile(part, bytes);
    await rename(part, file);
  } finally {
    await rm(part, { force: true });
  }
}

function parseJson(bytes: Buffer, shown: string): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new KilnError(ERROR_CODES.CONTENT, `${shown}: the manifest is not JSON (${(err as Error).message})`, { cause: err });
  }
}

function configOf(manifest: unknown, shown: string): Descriptor {
  const config = (manifest as { config?: Descriptor } | null)?.config;
  if (typeof config?.digest !== 'string' || !isDigest(config.digest) || !Number.isSafeInteger(config.size)) throw new KilnError(ERROR_CODES.CONTENT, `${shown}: not a kiln cache: the manifest has no config descriptor`);
  return config;
}
