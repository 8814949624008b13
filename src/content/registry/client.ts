/**
 * A client of the OCI distribution API: resolve a reference to the manifest
 * for a platform, fetch manifests and blobs (verified against their digests
 * before anything keeps them), and push blobs and manifests. Blobs stream
 * between the network and kiln's content store; no layer is ever held in
 * memory.
 */
import { once } from 'node:events';
import { createReadStream } from 'node:fs';
import { PassThrough } from 'node:stream';
import { type Digest, isDigest, sha256 } from '../../digest.js';
import { ERROR_CODES, KilnError } from '../../errors.js';
import { type Logger, silentLogger } from '../../log.js';
import { formatReference, type ImageReference } from '../reference.js';
import type { ContentStore } from '../store.js';
import { type Descriptor, type ImageIndex, type ImageManifest, type ImagePlatform, isIndexMediaType, isManifestMediaType, MEDIA_TYPES } from '../types.js';
import { DockerCredentials, defaultDockerConfigPath, RegistryAuth } from './auth.js';
import { HostFetch } from './host-fetch.js';
import type { RegistryHostConfig, RegistryHosts } from './hosts.js';
import { formatPlatform, selectPlatform } from '../platform.js';
import { discard, RegistryTransport, responseBody } from './transport.js';

/** Options of a registry client. */
export interface RegistryClientOptions {
  /**
   * Hosts (`registry.lan:5000`) spoken to over plain HTTP. Other hosts are
   * HTTPS only, but for loopback ones (`localhost`, `127.0.0.0/8`, `::1`)
   * with no `http` setting: HTTPS, then plain HTTP when HTTPS fails.
   */
  readonly insecureHosts?: readonly string[];
  /** Per-host settings, kiln.toml's `[registry."HOST"]`: mirrors tried before the host for pulls, plain HTTP, CAs. */
  readonly hosts?: RegistryHosts;
  /** Docker's config.json to take credentials from; default `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. */
  readonly dockerConfig?: string;
  readonly logger?: Logger;
  /** Attempts after the first for transient failures (5xx, 429, resets, refusals, cut bodies); default 3. */
  readonly retries?: number;
  /** Blobs larger than this are uploaded in PATCH chunks of this size, smaller ones in one PUT; default 16 MiB. */
  readonly uploadChunkSize?: number;
}

/** A manifest as the registry sent it, digest-verified. */
export interface FetchedManifest {
  readonly descriptor: Descriptor;
  readonly bytes: Buffer;
}

/** A reference resolved to the image manifest for one platform. */
export interface ResolvedImage {
  /** What the reference names: an index (or manifest list), or the image manifest itself. */
  readonly top: Descriptor;
  /** The bytes of `top`, as served (the same as `bytes` when the reference names a manifest). */
  readonly topBytes: Buffer;
  /** The image manifest for the platform (the index's entry, with its `platform`, when there is an index). */
  readonly descriptor: Descriptor;
  readonly bytes: Buffer;
  readonly manifest: ImageManifest;
}

/** Options of `resolve`. */
export interface ResolveOptions {
  readonly platform: ImagePlatform;
  readonly signal?: AbortSignal;
}

/** Options of `pushBlob`. */
export interface PushBlobOptions {
  /** A repository on the same registry that has the blob: asked to mount it instead of uploading. */
  readonly mountFrom?: ImageReference;
  readonly signal?: AbortSignal;
}

/**
 * An upload whose bytes are sent while they are made (a layer while it
 * compresses), in one PATCH whose body lasts as long as the bytes do (the
 * registry API's streamed upload); the digest is named when the bytes end.
 * Any failure leaves the blob to an ordinary push.
 */
export interface StreamedUpload {
  /** Sends `chunk`; resolves when the registry is ready for more. */
  write(chunk: Uint8Array): Promise<void>;
  /** Ends the bytes and closes the upload as `digest`. */
  finish(digest: Digest): Promise<void>;
  /** Drops the part in flight (the registry forgets the session in time). */
  abort(): void;
}

/** Every manifest kind kiln reads, for content negotiation. */
const MANIFEST_ACCEPT = [MEDIA_TYPES.ociIndex, MEDIA_TYPES.ociManifest, MEDIA_TYPES.dockerManifestList, MEDIA_TYPES.dockerManifest].join(', ');
/** Manifests are small; a registry must accept 4 MiB ones, and kiln reads no larger (they are held in memory). */
const MANIFEST_MAX_BYTES = 4 * 1024 * 1024;
/** An index may point at an index; a chain deeper than this is a loop or an attack. */
const MAX_INDEX_DEPTH = 4;
const DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024;

const pullScope = (ref: ImageReference): string => `repository:${ref.repository}:pull`;
const pushScope = (ref: ImageReference): string => `repository:${ref.repository}:pull,push`;
/** `host/repo:tag` or `host/repo@digest`, to name what failed. */
const manifestLabel = (ref: ImageReference, reference: string): string =>
  formatReference({ domain: ref.domain, repository: ref.repository, ...(isDigest(reference) ? { digest: reference } : { tag: reference }) });
const blobLabel = (ref: ImageReference, digest: Digest): string => formatReference({ domain: ref.domain, repository: ref.repository, digest });

/** Mirrors get one attempt each: when one fails, the next (or the origin) is there. */
const MIRROR_RETRIES = 0;

/** Talks to registries: one client per build is enough, it caches tokens per host and scope. */
export class RegistryClient {
  readonly #transport: RegistryTransport;
  readonly #logger: Logger;
  readonly #chunkSize: number;
  readonly #hosts: ReadonlyMap<string, RegistryHostConfig>;

  constructor(options: RegistryClientOptions = {}) {
    this.#logger = options.logger ?? silentLogger();
    const credentials = new DockerCredentials(options.dockerConfig ?? defaultDockerConfigPath(), this.#logger);
    // One per client: registry requests and token requests share each host's TLS settings and connections.
    const fetch = new HostFetch(options.hosts);
    this.#transport = new RegistryTransport({
      auth: new RegistryAuth(credentials, this.#logger, fetch),
      insecureHosts: options.insecureHosts ?? [],
      fetch,
      logger: this.#logger,
      retries: options.retries ?? 3,
    });
    this.#chunkSize = options.uploadChunkSize ?? DEFAULT_CHUNK_SIZE;
    this.#hosts = new Map(Object.entries(options.hosts ?? {}));
  }

  /**
   * Resolves the reference's digest (or tag) to the image manifest for
   * `platform`, following an index to the first entry for that platform.
   * Every manifest on the way is checked against its digest. A reference
   * that names a single manifest gives that manifest: its platform is in its
   * config, which the caller reads anyway.
   */
  async resolve(ref: ImageReference, options: ResolveOptions): Promise<ResolvedImage> {
    const { platform, signal } = options;
    const top = await this.#manifest(ref, ref.digest ?? ref.tag ?? 'latest', signal);
    let current = top;
    let descriptor = top.descriptor;
    for (let depth = 0; current.document.kind === 'index'; depth++) {
      if (depth === MAX_INDEX_DEPTH) throw new KilnError(ERROR_CODES.IMAGE, `${formatReference(ref)}: indexes nest deeper than ${MAX_INDEX_DEPTH} levels`);
      const { manifests } = current.document.index;
      const chosen = selectPlatform(manifests, platform);
      if (chosen === undefined) {
        const have = [...new Set(manifests.flatMap((d) => (d.platform === undefined ? [] : [formatPlatform(d.platform)])))];
        const listed = have.length === 0 ? 'no platform entries' : have.join(', ');
        throw new KilnError(ERROR_CODES.IMAGE, `${formatReference(ref)}: no manifest for platform ${formatPlatform(platform)}; the index has ${listed}`);
      }
      current = await this.#manifest(ref, chosen.digest, signal);
      if (current.bytes.length !== chosen.size) {
        const what = manifestLabel(ref, chosen.digest);
        throw new KilnError(ERROR_CODES.CONTENT, `${what}: the manifest is ${current.bytes.length} bytes, not the ${chosen.size} its index says`);
      }
      descriptor = chosen;
    }
    return { top: top.descriptor, topBytes: top.bytes, descriptor, bytes: current.bytes, manifest: current.document.manifest };
  }

  /** GETs the manifest or index `reference` (a tag or a digest) names, verified against the digest. */
  async fetchManifest(ref: ImageReference, reference: string, signal?: AbortSignal): Promise<FetchedManifest> {
    const { descriptor, bytes } = await this.#manifest(ref, reference, signal);
    return { descriptor, bytes };
  }

  /**
   * HEADs a manifest to learn its descriptor without downloading it (cheap,
   * and not counted by registries that limit pulls). Undefined when the
   * registry does not say the digest; GET it with `fetchManifest` then.
   */
  async headManifest(ref: ImageReference, reference: string, signal?: AbortSignal): Promise<Descriptor | undefined> {
    const res = await this.#pull(ref, signal, async (at, retries) => {
      const what = manifestLabel(at, reference);
      const answer = await this.#transport.retrying(
        what,
        () => this.#send(at, 'HEAD', `manifests/${reference}`, [pullScope(at)], { headers: { accept: MANIFEST_ACCEPT }, signal }),
        signal,
        retries,
      );
      if (answer.status !== 200) throw await this.#transport.failure(answer, what, at.domain);
      return answer;
    });
    const digest = res.headers.get('docker-content-digest') ?? '';
    const mediaType = mediaTypeOf(res.headers.get('content-type'));
    const size = Number(res.headers.get('content-length'));
    if (!isDigest(digest) || mediaType === undefined || !Number.isSafeInteger(size)) return undefined;
    if (!isIndexMediaType(mediaType) && !isManifestMediaType(mediaType)) return undefined;
    return { mediaType, digest, size };
  }

  /** Downloads a blob into the store, verified against the descriptor's digest and size; does nothing when the store has it. */
  async fetchBlob(ref: ImageReference, desc: Descriptor, store: ContentStore, signal?: AbortSignal): Promise<void> {
    if (await store.has(desc.digest)) return;
    await this.#pull(ref, signal, (at, retries) => {
      const what = blobLabel(at, desc.digest);
      return this.#transport.retrying(
        what,
        async () => {
          // The bytes as stored, never re-encoded on the way: their digest and length are what is checked.
          const res = await this.#send(at, 'GET', `blobs/${desc.digest}`, [pullScope(at)], { headers: { 'accept-encoding': 'identity' }, signal });
          if (res.status !== 200) throw await this.#transport.failure(res, what, at.domain);
          const length = res.headers.get('content-length');
          if (length !== null && Number(length) !== desc.size) {
            await discard(res);
            throw new KilnError(ERROR_CODES.CONTENT, `${what}: the registry sent ${length} bytes, not the ${desc.size} the descriptor says; it was not stored`);
          }
          await store.write(responseBody(res, at.domain), { digest: desc.digest, size: desc.size, what }, signal);
        },
        signal,
        retries,
      );
    });
  }

  /** Whether the repository has the blob. */
  async hasBlob(ref: ImageReference, digest: Digest, signal?: AbortSignal): Promise<boolean> {
    return this.#hasBlob(ref, digest, [pullScope(ref)], signal);
  }

  /**
   * Uploads a blob from the store unless the repository has it. With
   * `mountFrom` on the same registry, first asks the registry to mount the
   * blob from there (no bytes sent); a registry that declines answers with
   * an upload session, which is then used.
   */
  async pushBlob(ref: ImageReference, desc: Descriptor, store: ContentStore, options: PushBlobOptions = {}): Promise<'exists' | 'mounted' | 'uploaded'> {
    const { signal } = options;
    const what = blobLabel(ref, desc.digest);
    const size = await store.size(desc.digest);
    if (size === undefined) throw new KilnError(ERROR_CODES.CONTENT, `${what}: the blob is not in kiln's content store, so it cannot be pushed`);
    if (size !== desc.size) throw new KilnError(ERROR_CODES.CONTENT, `${what}: the stored blob is ${size} bytes, not the ${desc.size} its descriptor says`);

    if (await this.#hasBlob(ref, desc.digest, [pushScope(ref)], signal)) return 'exists';
    let mountFrom = options.mountFrom;
    if (mountFrom !== undefined && (mountFrom.domain !== ref.domain || mountFrom.repository === ref.repository)) {
      this.#logger.debug({ blob: what, from: formatReference(mountFrom) }, 'not mounting: the source is another registry or the same repository');
      mountFrom = undefined;
    }
    const scopes = mountFrom === undefined ? [pushScope(ref)] : [pushScope(ref), pullScope(mountFrom)];
    const query = mountFrom === undefined ? '' : `?mount=${desc.digest}&from=${encodeURIComponent(mountFrom.repository)}`;

    return this.#transport.retrying(
      what,
      async () => {
        // Every attempt opens a new upload session: the state of one that failed midway is unknown.
        const started = await this.#send(ref, 'POST', `blobs/uploads/${query}`, scopes, { headers: { 'content-length': '0' }, signal });
        if (started.status !== 202 && !(started.status === 201 && mountFrom !== undefined)) throw await this.#transport.failure(started, what, ref.domain);
        await discard(started);
        if (started.status === 201) return 'mounted';
        const minChunk = Number(started.headers.get('oci-chunk-min-length') ?? 0);
        await this.#upload(ref, {
          location: uploadLocation(started, what),
          file: store.path(desc.digest),
          size,
          digest: desc.digest,
          // A registry may ask for chunks of at least some size (object stores have a minimum part size).
          chunkSize: Math.max(this.#chunkSize, Number.isSafeInteger(minChunk) ? minChunk : 0),
          scopes,
          what,
          signal,
        });
        return 'uploaded';
      },
      signal,
    );
  }

  /** Opens an upload session into which bytes are streamed as they are made (see {@link StreamedUpload}). */
  async startUpload(ref: ImageReference, signal?: AbortSignal): Promise<StreamedUpload> {
    const what = `${formatReference(ref)} (a streamed upload)`;
    const scopes = [pushScope(ref)];
    const started = await this.#send(ref, 'POST', 'blobs/uploads/', scopes, { headers: { 'content-length': '0' }, signal });
    if (started.status !== 202) throw await this.#transport.failure(started, what, ref.domain);
    await discard(started);
    let location = uploadLocation(started, what);
    // One part for all the bytes: a PATCH per chunk would stop the compressor at
    // every chunk's end until the registry answered (the next PATCH needs the
    // location that answer gives).
    let part: { readonly body: PassThrough; readonly response: Promise<Response> } | undefined;
    const endPart = async (): Promise<void> => {
      if (part === undefined) return;
      const { body, response } = part;
      part = undefined;
      body.end();
      const patched = await response;
      if (patched.status !== 202) throw await this.#transport.failure(patched, what, ref.domain);
      await discard(patched);
      location = uploadLocation(patched, what);
    };
    return {
      write: async (chunk) => {
        if (part === undefined) {
          const body = new PassThrough();
          const response = this.#sendUrl(ref, 'PATCH', location, scopes, { headers: { 'content-type': 'application/octet-stream' }, body: () => body, signal });
          // Observed now, awaited when the bytes end: an early failure must not count as unhandled meanwhile.
          response.catch(() => undefined);
          part = { body, response };
        }
        const { body, response } = part;
        if (!body.write(chunk)) {
          // Waits for the registry to take the bytes, unless it answered (or failed) first.
          await Promise.race([once(body, 'drain'), response.then(() => Promise.reject(new KilnError(ERROR_CODES.REGISTRY, `${what}: the registry answered before the bytes ended`)))]);
        }
      },
      finish: async (digest) => {
        await endPart();
        location.searchParams.set('digest', digest);
        const done = await this.#sendUrl(ref, 'PUT', location, scopes, { headers: { 'content-length': '0' }, signal });
        if (done.status !== 201) throw await this.#transport.failure(done, what, ref.domain);
        await discard(done);
        const said = done.headers.get('docker-content-digest');
        if (said !== null && said !== digest) throw new KilnError(ERROR_CODES.REGISTRY, `${what}: the registry stored the upload as ${said}, not ${digest}`);
      },
      abort: () => {
        part?.body.destroy();
        part = undefined;
      },
    };
  }

  /** PUTs a manifest or index under a tag or its digest; returns its digest. */
  async pushManifest(ref: ImageReference, reference: string, mediaType: string, bytes: Uint8Array, signal?: AbortSignal): Promise<Digest> {
    const digest = sha256(bytes);
    const what = manifestLabel(ref, reference);
    if (isDigest(reference) && reference !== digest) {
      throw new KilnError(ERROR_CODES.IMAGE, `${what}: the manifest's bytes hash to ${digest}, so it cannot be pushed under ${reference}`);
    }
    const res = await this.#transport.retrying(
      what,
      () =>
        this.#send(ref, 'PUT', `manifests/${reference}`, [pushScope(ref)], {
          headers: { 'content-type': mediaType },
          body: () => bytes,
          signal,
        }),
      signal,
    );
    if (res.status !== 201) throw await this.#transport.failure(res, what, ref.domain);
    await discard(res);
    const said = res.headers.get('docker-content-digest');
    if (said !== null && said !== digest) throw new KilnError(ERROR_CODES.REGISTRY, `${what}: the registry stored the manifest as ${said}, not ${digest}`);
    return digest;
  }

  /**
   * Sends a blob's bytes into an upload session, in one PUT when it fits in
   * a chunk, else in PATCHes of `chunkSize` (each read straight from the
   * file), and closes the session with the digest.
   */
  async #upload(ref: ImageReference, upload: Upload): Promise<void> {
    const { file, size, chunkSize, scopes, what, signal } = upload;
    let location = upload.location;
    let close: SendInit = {
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
      body: () => createReadStream(file),
      signal,
    };
    if (size > chunkSize) {
      for (let start = 0; start < size; start += chunkSize) {
        const end = Math.min(start + chunkSize, size) - 1;
        const patched = await this.#sendUrl(ref, 'PATCH', location, scopes, {
          headers: { 'content-type': 'application/octet-stream', 'content-length': String(end - start + 1), 'content-range': `${start}-${end}` },
          body: () => createReadStream(file, { start, end }),
          signal,
        });
        if (patched.status !== 202) throw await this.#transport.failure(patched, what, ref.domain);
        await discard(patched);
        location = uploadLocation(patched, what);
      }
      close = { headers: { 'content-length': '0' }, signal };
    }
    location.searchParams.set('digest', upload.digest);
    const done = await this.#sendUrl(ref, 'PUT', location, scopes, close);
    if (done.status !== 201) throw await this.#transport.failure(done, what, ref.domain);
    await discard(done);
    const said = done.headers.get('docker-content-digest');
    if (said !== null && said !== upload.digest) throw new KilnError(ERROR_CODES.REGISTRY, `${what}: the registry stored the upload as ${said}`);
  }

  async #hasBlob(ref: ImageReference, digest: Digest, scopes: readonly string[], signal: AbortSignal | undefined): Promise<boolean> {
    const what = blobLabel(ref, digest);
    const res = await this.#transport.retrying(what, () => this.#send(ref, 'HEAD', `blobs/${digest}`, scopes, { signal }), signal);
    await discard(res);
    if (res.status === 200) return true;
    if (res.status === 404) return false;
    throw await this.#transport.failure(res, what, ref.domain);
  }

  /** GETs a manifest and checks it: digest, size limit, a kind kiln reads, a well-formed document. */
  #manifest(ref: ImageReference, reference: string, signal: AbortSignal | undefined): Promise<FetchedManifest & { readonly document: ManifestDocument }> {
    return this.#pull(ref, signal, (at, retries) => this.#manifestAt(at, reference, signal, retries));
  }

  async #manifestAt(
    ref: ImageReference,
    reference: string,
    signal: AbortSignal | undefined,
    retries: number | undefined,
  ): Promise<FetchedManifest & { readonly document: ManifestDocument }> {
    const what = manifestLabel(ref, reference);
    return this.#transport.retrying(
      what,
      async () => {
        const res = await this.#send(ref, 'GET', `manifests/${reference}`, [pullScope(ref)], { headers: { accept: MANIFEST_ACCEPT }, signal });
        if (res.status !== 200) throw await this.#transport.failure(res, what, ref.domain);
        const bytes = await readManifestBody(res, what, ref.domain);
        const digest = sha256(bytes);
        // A tag has no digest to check against but the one the registry states; a digest is its own check.
        const said = res.headers.get('docker-content-digest');
        const expected = isDigest(reference) ? reference : said !== null && said.startsWith('sha256:') ? said : undefined;
        if (expected !== undefined && expected !== digest) {
          throw new KilnError(ERROR_CODES.CONTENT, `${what}: the manifest served hashes to ${digest}, not ${expected}; it was refused`);
        }
        const document = decodeManifest(bytes, res.headers.get('content-type'), what);
        return { descriptor: { mediaType: document.mediaType, digest, size: bytes.length }, bytes, document };
      },
      signal,
      retries,
    );
  }

  /**
   * A pull from the mirrors of the reference's registry (kiln.toml's
   * `mirrors`), in order, then from the registry itself. A mirror that
   * fails in any way (unreachable, refused, not found, bad content) is
   * logged and passed over; only the registry's own failure is reported.
   * `retries` is undefined for the registry itself (the client's default).
   */
  async #pull<T>(ref: ImageReference, signal: AbortSignal | undefined, attempt: (at: ImageReference, retries: number | undefined) => Promise<T>): Promise<T> {
    for (const mirror of this.#hosts.get(ref.domain)?.mirrors ?? []) {
      // `HOST/PATH`: the mirror keeps the registry's repositories under PATH.
      const slash = mirror.indexOf('/');
      const at = slash === -1 ? { ...ref, domain: mirror } : { ...ref, domain: mirror.slice(0, slash), repository: `${mirror.slice(slash + 1)}/${ref.repository}` };
      try {
        return await attempt(at, MIRROR_RETRIES);
      } catch (err) {
        signal?.throwIfAborted();
        if (!(err instanceof KilnError)) throw err;
        this.#logger.debug({ registry: ref.domain, mirror, error: err.message }, 'registry mirror failed; trying the next, then the registry');
      }
    }
    return attempt(ref, undefined);
  }

  /** One request to `/v2/REPOSITORY/PATH` on the reference's registry. */
  #send(ref: ImageReference, method: Method, path: string, scopes: readonly string[], init: SendInit): Promise<Response> {
    return this.#sendUrl(ref, method, this.#transport.url(ref.domain, `${ref.repository}/${path}`), scopes, init);
  }

  #sendUrl(ref: ImageReference, method: Method, url: URL, scopes: readonly string[], init: SendInit): Promise<Response> {
    return this.#transport.send({ method, url, host: ref.domain, scopes, ...init });
  }
}

type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH';

/** The optional parts of a request. */
interface SendInit {
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: () => NonNullable<RequestInit['body']>;
  readonly signal?: AbortSignal | undefined;
}

/** An open upload session and what to send into it. */
interface Upload {
  readonly location: URL;
  readonly file: string;
  readonly size: number;
  readonly digest: Digest;
  readonly chunkSize: number;
  readonly scopes: readonly string[];
  readonly what: string;
  readonly signal: AbortSignal | undefined;
}

/** A parsed manifest, by kind. */
type ManifestDocument = { readonly mediaType: string } & (
  | { readonly kind: 'index'; readonly index: ImageIndex }
  | { readonly kind: 'manifest'; readonly manifest: ImageManifest }
);

/** Where an upload goes on; registries may answer with a relative Location. */
function uploadLocation(res: Response, what: string): URL {
  const location = res.headers.get('location');
  if (location === null) throw new KilnError(ERROR_CODES.REGISTRY, `${what}: the registry started an upload without saying where to send it (no Location)`);
  return new URL(location, res.url);
}

/** A Content-Type without its parameters. */
function mediaTypeOf(contentType: string | null): string | undefined {
  const type = contentType?.split(';')[0]?.trim();
  return type === undefined || type === '' ? undefined : type;
}

/** Reads a manifest body, refusing one larger than any registry must accept. */
async function readManifestBody(res: Response, what: string, host: string): Promise<Buffer> {
  const tooBig = (): KilnError => new KilnError(ERROR_CODES.IMAGE, `${what}: the manifest is larger than ${MANIFEST_MAX_BYTES} bytes`);
  if (Number(res.headers.get('content-length') ?? 0) > MANIFEST_MAX_BYTES) {
    await discard(res);
    throw tooBig();
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of responseBody(res, host)) {
    size += chunk.byteLength;
    if (size > MANIFEST_MAX_BYTES) throw tooBig();
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function isDescriptor(value: unknown): value is Descriptor {
  if (value === null || typeof value !== 'object') return false;
  const d = value as Record<string, unknown>;
  const { mediaType, digest, size } = d;
  return typeof mediaType === 'string' && typeof digest === 'string' && isDigest(digest) && typeof size === 'number' && Number.isSafeInteger(size) && size >= 0;
}

/** Parses and checks a manifest or index; its kind comes from its own mediaType, else the Content-Type, else its shape. */
function decodeManifest(bytes: Buffer, contentType: string | null, what: string): ManifestDocument {
  const bad = (why: string): KilnError => new KilnError(ERROR_CODES.IMAGE, `${what}: ${why}`);
  let doc: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(bytes.toString('utf8'));
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not a JSON object');
    doc = parsed as Record<string, unknown>;
  } catch (err) {
    throw bad(`the manifest is not valid JSON (${(err as Error).message})`);
  }
  const headerType = mediaTypeOf(contentType);
  if (doc['schemaVersion'] === 1 || headerType?.startsWith('application/vnd.docker.distribution.manifest.v1') === true) {
    throw bad('this is a Docker schema 1 manifest, which kiln does not read; push the image again with a current Docker, BuildKit or skopeo');
  }
  if (doc['schemaVersion'] !== 2) throw bad(`unsupported manifest schemaVersion ${JSON.stringify(doc['schemaVersion'])}`);
  // The document's own mediaType wins; older ones have none, so then the Content-Type, then the shape.
  const known = (t: string | undefined): t is string => isIndexMediaType(t) || isManifestMediaType(t);
  const own = typeof doc['mediaType'] === 'string' ? doc['mediaType'] : undefined;
  const mediaType = own ?? (known(headerType) ? headerType : Array.isArray(doc['manifests']) ? MEDIA_TYPES.ociIndex : MEDIA_TYPES.ociManifest);
  if (!known(mediaType)) throw bad(`unsupported manifest media type ${JSON.stringify(mediaType)}`);
  if (isIndexMediaType(mediaType)) {
    const manifests = doc['manifests'];
    if (!Array.isArray(manifests) || !manifests.every(isDescriptor)) throw bad('malformed index: "manifests" must be a list of descriptors');
    return { mediaType, kind: 'index', index: doc as unknown as ImageIndex };
  }
  const layers = doc['layers'];
  if (!isDescriptor(doc['config'])) throw bad('malformed manifest: "config" must be a descriptor');
  if (!Array.isArray(layers) || !layers.every(isDescriptor)) throw bad('malformed manifest: "layers" must be a list of descriptors');
  return { mediaType, kind: 'manifest', manifest: doc as unknown as ImageManifest };
}
