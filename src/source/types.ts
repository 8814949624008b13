/**
 * The source seam. Each identifier scheme (`local`, `docker-image`,
 * `oci-layout`, ...) is one {@link Source}, registered by its scheme in
 * registry.ts; nothing outside `source/` looks at a scheme string.
 *
 * A source op meets its Source twice: `check` before anything runs (the
 * build refuses what it cannot give the op, e.g. an unbound name), then
 * `resolve` once per solve, which gives the instance the solver keys and
 * runs. Resolving does no I/O; the instance does its work in `cacheKey`
 * (a local source's checksum, an image's manifest) and `snapshot` (the files).
 */
import type { CacheManager, ResultRef } from '../cache/types.js';
import type { RegistryClient } from '../content/registry/client.js';
import type { ContentStore } from '../content/store.js';
import type { CacheKey } from '../digest.js';
import { type ErrorCode, OpError } from '../errors.js';
import type { Op, SourceOp } from '../llb/types.js';
import type { ProgressSink } from '../progress/types.js';
import type { ResolvedImage } from './image/types.js';
import type { HttpValidatorStore } from './http/validators.js';
import type { FileHashCache, LocalFileSignature } from './local/checksum.js';

/** A loaded source op, as a Source sees it. */
export type SourceOpOf = Op & { readonly body: { readonly kind: 'source'; readonly source: SourceOp } };

/**
 * Names the caller binds to host paths before a build (`--local NAME=DIR`,
 * `--oci-layout NAME=DIR`), by the SolveOptions field that carries them.
 */
export interface SourceBindings {
  /** `local://NAME` → host directory. */
  readonly locals: ReadonlyMap<string, string>;
  /** `oci-layout://NAME` → OCI image layout directory. */
  readonly ociLayouts: ReadonlyMap<string, string>;
}

/** Which table of {@link SourceBindings} a binding lives in. */
export type BindingKind = keyof SourceBindings;

/** What sources get from the solve: bindings, kiln's stores and the registry client. */
export interface SourceContext {
  readonly bindings: SourceBindings;
  /** Blobs of images (manifests, configs, layers). */
  readonly content: ContentStore;
  /** What HTTP sources remember of their downloads (the session's); without it every build downloads again. */
  readonly httpValidators?: HttpValidatorStore;
  /** kiln's scratch directory (ROOT/tmp, on the snapshots' filesystem), for downloads in flight; default: the OS's. */
  readonly scratchDir?: string;
  /** The local sources' file-hash index (the session's); without it every file is read. */
  readonly localHashes?: FileHashCache;
  /** Build secrets by id (`--secret`), for sources that authenticate with one. */
  readonly secrets: ReadonlyMap<string, Uint8Array>;
  /** SSH agent sockets by id (`--ssh`), for sources that fetch over ssh. */
  readonly ssh: ReadonlyMap<string, string>;
  /** Where git sources keep their bare repositories (under kiln's root); without it git sources are refused. */
  readonly gitRepos?: string;
  /** The registry client, made at first use so builds without images never load it. */
  registry(): Promise<RegistryClient>;
}

/** One source op in one solve: how to key it and how to make its files. */
export interface SourceInstance {
  /** The op's cache key: its content (a checksum, a manifest digest), never its name. */
  cacheKey(signal: AbortSignal, progress: ProgressSink): Promise<CacheKey>;
  /** The op's files as a ref in `cache` (the caller owns it), or null for an empty tree. */
  snapshot(cache: CacheManager, signal: AbortSignal, progress: ProgressSink): Promise<ResultRef>;
  /**
   * For sources that are images: the image, resolved once per solve (shared
   * with cacheKey and snapshot), so an image output can start from its config.
   */
  readonly image?: (signal: AbortSignal) => Promise<ResolvedImage>;
  /**
   * For sources whose key is their files (local): what those files were
   * when last keyed, so a later build can name the paths that changed.
   */
  readonly fileSignature?: () => LocalFileSignature | undefined;
  /**
   * Frees what keying left for a snapshot that was not needed (an HTTP
   * source's download when the result was cached). Called once, after the solve.
   */
  readonly release?: () => Promise<void>;
}

/** One identifier scheme. */
export interface Source {
  /** The scheme, without `://`. */
  readonly scheme: string;
  /**
   * Refuses, before anything runs, what this build cannot give the op (an
   * unbound name, an identifier the format allows but the source cannot use).
   * Throws a KilnError naming the op and field.
   */
  check(op: SourceOpOf, bindings: SourceBindings): void;
  /**
   * The op's instance for one solve. No I/O: that happens in cacheKey and
   * snapshot. Called before anything runs, so it may also refuse what the
   * context lacks (a secret the op names that was not given).
   */
  resolve(op: SourceOpOf, ctx: SourceContext): SourceInstance;
}

/** The part of an identifier after `SCHEME://`. */
export function identifierRest(op: SourceOpOf): string {
  const { identifier } = op.body.source;
  return identifier.slice(identifier.indexOf('://') + 3);
}

/** Where a source op's identifier is, for errors. */
export function identifierSite(op: SourceOpOf): { readonly op: string; readonly field: string } {
  return { op: op.name, field: `ops.${op.name}.source.identifier` };
}

/**
 * A source op names a binding the caller did not give. The message says
 * what is missing; the CLI adds which flag gives it (`binding` in the table
 * `bindings` of SolveOptions).
 */
export class UnboundSourceError extends OpError {
  /** The SolveOptions table the name is missing from. */
  readonly bindings: BindingKind;
  /** The name the op asks for (`context` of `local://context`). */
  readonly binding: string;
  constructor(options: { readonly op: SourceOpOf; readonly code: ErrorCode; readonly what: string; readonly bindings: BindingKind; readonly binding: string }) {
    super(options.code, `${options.what} source "${options.binding}" is not bound`, identifierSite(options.op));
    this.name = 'UnboundSourceError';
    this.bindings = options.bindings;
    this.binding = options.binding;
  }
}
