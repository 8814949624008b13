/**
 * The exporter seam. Each output type (`local`, `tar`, `oci`, `docker`,
 * `image`) is one {@link Exporter}, registered by its type in registry.ts.
 * An export writes a solved result somewhere outside kiln's store; an
 * exporter whose work has a second step that should wait for every other
 * output (the push of `type=image,push=true`) returns it as `finalize`, and
 * the finalizers run once every output is written.
 */
import type { Writable } from 'node:stream';
import type { ImmutableRef, ResultRef } from '../cache/types.js';
import type { RegistryClient } from '../content/registry/client.js';
import type { ContentStore } from '../content/store.js';
import type { Descriptor, ImageConfig, ImagePlatform } from '../content/types.js';
import type { CacheKey, Digest } from '../digest.js';
import type { ImageConfig as LlbImageConfig } from '../llb/types.js';
import type { ExportCounter, ProgressSink } from '../progress/types.js';
import type { MountedDir } from '../snapshot/types.js';

/** Options of the functions that write a directory, a tar or an image archive. */
export interface ExportOptions {
  /** Aborting stops the export, removes what it staged, and rejects with the signal's reason. */
  readonly signal?: AbortSignal;
  /** Told the bytes written so far as an archive is written, and once more (`done`) when it is whole. */
  readonly onBytes?: (written: number, done: boolean) => void;
}

/** How an image output writes its image. */
export interface ImageOutputOptions {
  /** Layer compression of new layers (default gzip). */
  readonly compression?: 'gzip' | 'uncompressed';
  readonly compressionLevel?: number;
  /** OCI media types (default: true for oci and image outputs, false for docker). */
  readonly ociMediaTypes?: boolean;
  /** Seconds since the epoch (SOURCE_DATE_EPOCH): created time, and the clamp for file times. */
  readonly sourceDateEpoch?: number;
  /** Clamp file times in new layers to sourceDateEpoch (default true when it is set). */
  readonly rewriteTimestamp?: boolean;
}

/** Where a result goes. */
export type OutputSpec =
  | { readonly type: 'local'; readonly dest: string }
  | { readonly type: 'tar'; readonly dest: string | Writable }
  /** An OCI image layout tarball; `name` (references, comma-separated, see imageNames) is recorded in index.json. */
  | ({ readonly type: 'oci'; readonly dest: string | Writable; readonly name?: string } & ImageOutputOptions)
  /** A docker-archive tarball (what `docker load` reads). */
  | ({ readonly type: 'docker'; readonly dest: string | Writable; readonly name: string } & ImageOutputOptions)
  /** kept in kiln's content store under `name`; with push, pushed to its registry (`insecure`: over plain HTTP). */
  | ({ readonly type: 'image'; readonly name: string; readonly push?: boolean; readonly insecure?: boolean } & ImageOutputOptions);

export type OutputType = OutputSpec['type'];

/** The output spec of one type. */
export type OutputOf<T extends OutputType> = Extract<OutputSpec, { readonly type: T }>;

/** The image an image output starts from, resolved by the solve. */
export interface BaseImage {
  /** Where it came from (`docker.io/library/alpine:3.20`): a push to the same registry mounts its layers. */
  readonly name: string;
  readonly config: ImageConfig;
}

/** What the definition says of the image its result makes. */
export interface ResultImage {
  /** The result op's platform. */
  readonly platform: ImagePlatform;
  /** The definition's `image.config`. */
  readonly config?: LlbImageConfig;
  /** The definition's `image.base`, resolved. */
  readonly base?: BaseImage;
  /**
   * An OCI image config given beside the definition (`--image-config`: what
   * a frontend returns as `containerimage.config`). It takes the place of a
   * base's config: the result's layers, platform and `created` are set over it.
   */
  readonly given?: ImageConfig;
  /**
   * The image's created time (RFC 3339), chosen once per solve: every image
   * output of one build is the same image, with the same config and
   * manifest digests. SOURCE_DATE_EPOCH, where an output sets it, wins.
   */
  readonly created: string;
}

/** A new layer blob: the descriptor of its blob in the content store and its diffID. */
export interface LayerBlob {
  readonly descriptor: Descriptor;
  readonly diffID: Digest;
}

/**
 * The layer blobs the outputs of one solve have asked for, by snapshot
 * layer and variant: outputs that need the same blob share one export (and
 * one in flight is awaited, not started again). Owned by image-layers.ts;
 * it lives as long as the solve result.
 */
export type LayerBlobMemo = Map<string, Promise<LayerBlob>>;

/** What exporting needs of the solve that made a result, beyond the result itself. */
export interface ExportEnvironment {
  readonly content: ContentStore;
  /** The solve's registry client; with `insecureHosts`, a client that speaks plain HTTP to those hosts only. */
  registry(insecureHosts?: readonly string[]): Promise<RegistryClient>;
  /** The solve's progress stream: exports report into it after the ops. */
  readonly progress: ProgressSink;
  /** What no output may overwrite (kiln's root, the build's local sources). */
  readonly protect: ProtectedPaths;
  readonly layers: LayerBlobMemo;
  /** Numbers this solve's outputs as they start, from 0 (the `output` of export progress), across exportResult calls. */
  nextOutput(): number;
}

/** The cache exports of a solve (`--export-cache`), run by exportResult after the outputs. */
export interface CacheExportPlan {
  readonly specs: readonly CacheExportSpec[];
  /** The records of `mode` (the result's, or every vertex's the local cache has), held until `release`. */
  records(mode: CacheMode): Promise<{ readonly records: readonly CacheRecordSource[]; release(): Promise<void> }>;
  /**
   * Snapshots of the cache mounts `selection` names (`all`: every cache id
   * the build's exec ops name) that exist in this root, taken once per solve
   * (every export shares them) and held until the result is released.
   */
  mounts(selection: CacheMountSelection): Promise<readonly CacheMountSource[]>;
}

/** Which cache mounts an export carries: these cache ids, or every one the build names. */
export type CacheMountSelection = readonly string[] | 'all';

/** One cache mount to export: its cache id and a snapshot of its directory (held by the plan). */
export interface CacheMountSource {
  readonly id: string;
  readonly ref: ImmutableRef;
}

/** A solved result, as exporters see it. */
export interface ExportableResult {
  /** What `--export-cache` asked for; none when absent. */
  readonly cacheExports?: CacheExportPlan;
  /** The result; null when it is the empty filesystem. */
  readonly ref: ResultRef;
  readonly image: ResultImage;
  readonly environment: ExportEnvironment;
  /** Mounts the result read-only (an empty directory for scratch). */
  mount(): Promise<MountedDir>;
}

/** The result as one export sees it: its files are mounted once for all the outputs. */
export interface ExportSource {
  readonly ref: ResultRef;
  readonly image: ResultImage;
  /** The result's files, mounted read-only on first use and unmounted after the last output. */
  directory(): Promise<string>;
}

/** What an exporter gets besides the result and its output spec. */
export interface ExportContext {
  readonly content: ContentStore;
  registry(insecureHosts?: readonly string[]): Promise<RegistryClient>;
  readonly layers: LayerBlobMemo;
  readonly signal: AbortSignal;
  /** Reports a counter of this output (throttled by the caller; `done` is always passed on). */
  report(counter: ExportCounter, current: number, options?: { readonly total?: number; readonly done?: boolean }): void;
}

/** What an export leaves to do once every output is written. */
export interface Exported {
  /** An image output's manifest digest, reported on the output's completion (progress and the build summary). */
  readonly digest?: string;
  /** An image output's manifest descriptor (for `--metadata-file`). */
  readonly descriptor?: Descriptor;
  /** The second step (a push), run after all the exports, in output order. */
  readonly finalize?: () => Promise<void>;
}

/** One output type. */
export interface Exporter<T extends OutputType = OutputType> {
  readonly type: T;
  export(result: ExportSource, output: OutputOf<T>, ctx: ExportContext): Promise<Exported>;
}

/** What no output may overwrite. */
export interface ProtectedPaths {
  /** kiln's root: cache, snapshots, content. */
  readonly root: string;
  /** Directories bound to `local://NAME` sources, by NAME. */
  readonly locals: ReadonlyMap<string, string>;
}

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

/** Which results go into the cache: the result's record only (`min`) or every vertex's (`max`). */
export type CacheMode = 'min' | 'max';

/** `--export-cache`: where, which results, how layers are compressed, and whether a failure fails the build. */
export type CacheExportSpec = {
  readonly mode?: CacheMode;
  readonly compression?: 'gzip' | 'uncompressed';
  /** A failed export is a warning, not a failed build. */
  readonly ignoreError?: boolean;
  /** Cache mounts whose contents go into the cache too (`cache-mounts=ID;ID` or `all`). */
  readonly cacheMounts?: CacheMountSelection;
} & (
  | { readonly type: 'registry'; readonly ref: string; readonly insecure?: boolean }
  /** An OCI layout directory; the artifact is tagged `tag` (default `latest`) in its index.json. */
  | { readonly type: 'local'; readonly dest: string; readonly tag?: string }
);

/** One op's results to export; the refs are held by the caller. */
export interface CacheRecordSource {
  readonly key: CacheKey;
  readonly op: string;
  readonly outputs: readonly ResultRef[];
}
