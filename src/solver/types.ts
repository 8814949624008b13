/**
 * The solver is a generic DAG engine: it knows vertices, edges, cache keys and
 * results of type R, and nothing of containers, snapshots or files. Ops plug in
 * through SolverOp; results are cached through ResultCache.
 */
import type { CacheKey, Digest } from '../digest.js';
import type { ProgressGroup, ProgressSink, RerunReason } from '../progress/types.js';

/** One input of a vertex: an output of another vertex. */
export interface Edge<R> {
  readonly vertex: Vertex<R>;
  readonly output: number;
}

/** A node of the build graph. Vertices with equal `digest` are one vertex. */
export interface Vertex<R> {
  readonly digest: Digest;
  /** Shown in progress. */
  readonly name: string;
  /** The group progress shows the vertex in (the op's `metadata.progressGroup`). */
  readonly progressGroup?: ProgressGroup;
  readonly inputs: readonly Edge<R>[];
  readonly op: SolverOp<R>;
  /** Skip the cache lookup and run (the new result is stored). */
  readonly ignoreCache: boolean;
}

export interface CacheKeyContext {
  /** The cache keys of the vertex's inputs, in `inputs` order. */
  readonly inputKeys: readonly CacheKey[];
  readonly signal: AbortSignal;
  readonly progress: ProgressSink;
}

export interface RunContext {
  readonly signal: AbortSignal;
  readonly progress: ProgressSink;
  /** The vertex's own cache key (computed before it runs). */
  readonly cacheKey: CacheKey;
}

/** What an op gives the solver: how to key it, and how to run it. */
export interface SolverOp<R> {
  /**
   * The cache key of this vertex. Usually derived from the op's definition and
   * `inputKeys`; sources whose key is their content (local files) compute it here.
   */
  cacheKey(ctx: CacheKeyContext): Promise<CacheKey>;
  /**
   * Runs the op on its inputs (one result per edge, in order) and returns all
   * its outputs. The solver owns the inputs (it releases them); the op owns
   * nothing it returns.
   */
  run(inputs: readonly R[], ctx: RunContext): Promise<readonly R[]>;
  /**
   * Called once the solver knows the vertex will run (its cache lookup
   * missed, or it ignores the cache), before its inputs are solved: the op
   * may start getting ready for `run` (e.g. a network namespace) meanwhile.
   */
  willRun?(): void;
  /**
   * What `run` mostly spends: `cpu` (the default) is work in this process
   * (copying, hashing), capped at the CPU count; `wait` is waiting on
   * something else, a container's process, which the CPU count says nothing
   * about: such ops are capped only by the solve's parallelism.
   */
  readonly spends?: 'cpu' | 'wait';
}

/** Persistent results by cache key. */
export interface ResultCache<R> {
  /** The outputs stored under `key`, or undefined. */
  load(key: CacheKey): Promise<readonly R[] | undefined>;
  /**
   * Stores `outputs` under `key`, replacing what it held: the latest save
   * wins, so an ignoreCache rerun is what the next build loads. The caller
   * keeps (and later releases) its handles on `outputs`.
   */
  save(key: CacheKey, outputs: readonly R[], vertex: Vertex<R>): Promise<void>;
  /** Gives up one handle on a result (refcounted results); no-op for plain values. */
  release(result: R): Promise<void>;
  /** Another handle on a result, so two holders can release independently. */
  retain(result: R): R;
}

/**
 * Says why a vertex reruns, and remembers what each built vertex's key was
 * made of, so the next build can say it. Must not throw: an explanation
 * that cannot be given is left out, never a failed build.
 */
export interface RerunExplainer<R> {
  /** Why `vertex` runs (its lookup missed, or it ignores the cache); never asked for a cache hit. */
  reason(vertex: Vertex<R>, key: CacheKey, inputKeys: readonly CacheKey[]): RerunReason | undefined;
  /** `vertex` has a result under `key` now (run and saved, or loaded): the next build compares with it. */
  remember(vertex: Vertex<R>, key: CacheKey, inputKeys: readonly CacheKey[]): void;
}

/**
 * Results kept elsewhere (caches imported from a registry or a directory),
 * asked for a key when the local cache misses, before the vertex runs. A hit
 * is stored in the local cache by the implementation and handed over as
 * `ResultCache.load` hands its results (the solver releases them). A remote
 * that fails answers undefined (a miss): only a cancel may throw.
 */
export interface RemoteResults<R> {
  load(key: CacheKey, vertex: Vertex<R>, ctx: { readonly signal: AbortSignal; readonly progress: ProgressSink }): Promise<readonly R[] | undefined>;
}
