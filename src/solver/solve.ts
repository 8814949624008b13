/**
 * The solver: from a target edge it walks the graph, computes cache keys
 * bottom-up, loads what the cache already has and runs the rest, each vertex
 * at most once, with at most `parallelism` ops running at a time, of which
 * at most the CPU count spend CPU in this process.
 */
import { setMaxListeners } from 'node:events';
import { availableParallelism, totalmem } from 'node:os';
import pLimit from 'p-limit';
import type { LimitFunction } from 'p-limit';
import type { CacheKey, Digest } from '../digest.js';
import { ERROR_CODES, KilnError, OpError, asKilnError } from '../errors.js';
import { NULL_PROGRESS } from '../progress/types.js';
import type { ProgressSink, RerunReason, VertexEvent } from '../progress/types.js';
import { topologicalOrder } from './order.js';
import type { Edge, RemoteResults, RerunExplainer, ResultCache, Vertex } from './types.js';

/** Listeners on the solve's signal before node warns of a leak: more than any graph runs at once. */
const MAX_SIGNAL_LISTENERS = 100_000;

/** How to solve: where results are cached, how many ops may run at once, how to stop. */
export interface SolveOptions<R> {
  readonly cache: ResultCache<R>;
  /** Asked on a local cache miss, before the vertex runs (imported caches). */
  readonly remote?: RemoteResults<R>;
  /**
   * Max ops running at once, of every kind. Default: defaultParallelism(),
   * from the memory, and ops that spend CPU (SolverOp.spends) at most the
   * CPU count. One place caps parallelism.
   */
  readonly parallelism?: number;
  readonly signal?: AbortSignal;
  readonly progress?: ProgressSink;
  /** Says why each vertex that runs was not cached (the `reason` of its vertex events). */
  readonly explain?: RerunExplainer<R>;
}

/**
 * Solves `target` (an edge: vertex + output index) and returns that output;
 * the caller owns (releases) it. Every other result the solve loaded or
 * produced is released before this returns or throws.
 */
export async function solve<R>(target: Edge<R>, options: SolveOptions<R>): Promise<R> {
  const parallelism = options.parallelism ?? defaultParallelism();
  if (!Number.isInteger(parallelism) || parallelism < 1) {
    throw new KilnError(ERROR_CODES.USAGE, `parallelism must be a positive integer, got ${parallelism}`);
  }
  const { signal } = options;
  if (signal?.aborted) throw cancelled(signal);
  // A parallelism the caller chose caps every op alike, as it did before exec ops were set apart.
  const cpuParallelism = options.parallelism ?? Math.min(parallelism, availableParallelism());
  const limits = { all: pLimit(parallelism), cpu: pLimit(cpuParallelism) };
  const session = new Session(topologicalOrder(target.vertex), options.cache, limits, options.progress ?? NULL_PROGRESS, options.explain, options.remote);
  const forward = (): void => session.cancel(signal?.reason);
  signal?.addEventListener('abort', forward, { once: true });
  try {
    return await session.solve(target, signal);
  } finally {
    signal?.removeEventListener('abort', forward);
  }
}

/** Memory each running op is budgeted by the default parallelism: a container's runtime and process, and kiln's share for it. */
const MEMORY_PER_OP = 256 * 1024 * 1024;

/**
 * The default cap on ops running at once: one per 256 MiB of the host's
 * memory, and never fewer than the CPUs (96 on 24 GiB, 8 on 2 GiB). Exec
 * ops wait on their processes, not on this process's CPU, so the CPU count
 * would starve independent ones; the bound is what keeps a wide graph from
 * starting more containers than the memory holds.
 */
export function defaultParallelism(): number {
  return Math.max(availableParallelism(), Math.floor(totalmem() / MEMORY_PER_OP));
}

/** The two caps of a solve: every op takes a slot of `all`; ops that spend CPU first take one of `cpu`. */
interface Limits {
  readonly all: LimitFunction;
  readonly cpu: LimitFunction;
}

/** The state of one solve: memoized keys and results, the handles held, the first failure. */
class Session<R> {
  /** The reachable vertices, inputs first. */
  readonly #order: readonly Vertex<R>[];
  /** The vertex that stands for each digest. */
  readonly #byDigest: ReadonlyMap<Digest, Vertex<R>>;
  readonly #cache: ResultCache<R>;
  readonly #limits: Limits;
  readonly #remote: RemoteResults<R> | undefined;
  readonly #progress: ProgressSink;
  readonly #explain: RerunExplainer<R> | undefined;
  /** Why each vertex that runs was not cached: on its vertex events from then on. */
  readonly #reasons = new Map<Digest, RerunReason>();
  /** Aborted on the first failure or on the caller's cancel; ops see it as ctx.signal. */
  readonly #controller = new AbortController();
  readonly #keys = new Map<Digest, Promise<CacheKey>>();
  /** When vertices that reported progress while keyed were announced as started. */
  readonly #announced = new Map<Digest, string>();
  readonly #results = new Map<Digest, Promise<readonly R[]>>();
  readonly #inFlight = new Set<Promise<unknown>>();
  /** One handle per output loaded or produced, released at the end. */
  readonly #held: R[] = [];
  #failure: KilnError | undefined;

  constructor(order: readonly Vertex<R>[], cache: ResultCache<R>, limits: Limits, progress: ProgressSink, explain: RerunExplainer<R> | undefined, remote: RemoteResults<R> | undefined) {
    this.#order = order;
    this.#explain = explain;
    this.#remote = remote;
    this.#byDigest = new Map(order.map((vertex) => [vertex.digest, vertex]));
    this.#cache = cache;
    this.#limits = limits;
    this.#progress = progress;
    // Every running op listens on it (exec ops several times): dozens at once
    // is expected, and node's leak warning (which inspects the signal) would
    // cost each listener past the tenth a slice of the main thread. Not 0
    // ("unlimited"): node 20's getMaxListeners throws on an EventTarget whose
    // limit is 0, and undici calls it on the signal of every fetch.
    setMaxListeners(MAX_SIGNAL_LISTENERS, this.#controller.signal);
  }

  /** Stops scheduling and aborts running ops (the caller's signal fired). */
  cancel(reason: unknown): void {
    this.#controller.abort(reason);
  }

  async solve(target: Edge<R>, signal: AbortSignal | undefined): Promise<R> {
    let output: { readonly value: R } | undefined;
    let error: unknown;
    try {
      // Keys are asked for inputs first, so each key finds its inputs' keys
      // already memoized: asked for from the target down, every key would
      // ask for its inputs' before its first await, one stack frame deeper
      // per op, and a chain of a few thousand ops would overflow the stack.
      for (const vertex of this.#order) void this.#key(vertex);
      output = { value: await this.#output(target) };
    } catch (err) {
      error = err;
    }
    // Whatever happened, let every started op finish its cleanup before releasing what they were given.
    while (this.#inFlight.size > 0) await Promise.allSettled(this.#inFlight);
    // A cancel wins over a late success (an op that ignored the signal): the caller asked to stop.
    const handed = output !== undefined && signal?.aborted !== true ? { value: this.#cache.retain(output.value) } : undefined;
    const releaseError = await this.#releaseHeld();
    if (handed !== undefined) {
      if (releaseError === undefined) {
        this.#reportSkippedAsCached();
        await this.#rememberSkipped();
        return handed.value;
      }
      await this.#cache.release(handed.value);
      throw asKilnError(releaseError);
    }
    if (this.#failure !== undefined) throw this.#failure;
    if (signal?.aborted) throw cancelled(signal);
    throw asKilnError(error);
  }

  /**
   * Vertices below a cache hit were keyed but never needed. They are as good
   * as cached, and a user expects to see every step of a cached rebuild
   * reported CACHED, so say so (inputs first).
   */
  #reportSkippedAsCached(): void {
    const now = timestamp();
    for (const vertex of this.#order) {
      if (this.#keys.has(vertex.digest) && !this.#results.has(vertex.digest)) {
        this.#emit(vertex, { started: this.#announced.get(vertex.digest) ?? now, completed: now, cached: true });
      }
    }
  }

  /**
   * What vertices below a cache hit were made of is what this build had
   * too: the next build compares with it (a source whose content went back
   * to an earlier state, say, compares with that state).
   */
  async #rememberSkipped(): Promise<void> {
    if (this.#explain === undefined) return;
    for (const vertex of this.#order) {
      const key = this.#keys.get(vertex.digest);
      if (key === undefined || this.#results.has(vertex.digest)) continue;
      // A key that failed below a hit did not fail the build: it is not remembered either.
      const keys = await Promise.all([key, this.#inputKeys(vertex)]).catch(() => undefined);
      if (keys !== undefined) this.#explain.remember(vertex, keys[0], keys[1]);
    }
  }

  /** Releases the held handles, last acquired first; returns the first error. */
  async #releaseHeld(): Promise<unknown> {
    let first: unknown;
    for (const result of this.#held.splice(0).reverse()) {
      try {
        await this.#cache.release(result);
      } catch (err) {
        first ??= err;
      }
    }
    return first;
  }

  async #output(edge: Edge<R>): Promise<R> {
    const outputs = await this.#result(edge.vertex);
    if (!Number.isInteger(edge.output) || edge.output < 0 || edge.output >= outputs.length) {
      const message = `${edge.vertex.name} has ${outputs.length} output(s); output ${edge.output} was asked for`;
      throw this.#fail(edge.vertex, new KilnError(ERROR_CODES.INTERNAL, message));
    }
    return outputs[edge.output] as R;
  }

  /** The vertex's cache key, computed once, after its inputs' keys. */
  #key(vertex: Vertex<R>): Promise<CacheKey> {
    return this.#once(this.#keys, vertex, async (v) => {
      const inputKeys = await this.#inputKeys(v);
      return this.#step(v, () => v.op.cacheKey({ inputKeys, signal: this.#controller.signal, progress: this.#announcing(v) }));
    });
  }

  /** The keys of the vertex's inputs (memoized: already computed once the vertex's own key is). */
  #inputKeys(vertex: Vertex<R>): Promise<CacheKey[]> {
    return Promise.all(vertex.inputs.map((edge) => this.#key(edge.vertex)));
  }

  /**
   * Progress for a vertex's key phase. Keying is usually instant, but a local
   * source hashes its files then: the first thing it reports announces the
   * vertex as started, so its counters are never shown under no name.
   */
  #announcing(vertex: Vertex<R>): ProgressSink {
    return {
      emit: (event) => {
        if (!this.#announced.has(vertex.digest)) {
          const started = timestamp();
          this.#announced.set(vertex.digest, started);
          this.#emit(vertex, { started, cached: false });
        }
        this.#progress.emit(event);
      },
    };
  }

  /**
   * All outputs of the vertex: loaded from the cache when the key hits (then
   * its inputs are never solved), else run on its solved inputs and saved.
   */
  #result(vertex: Vertex<R>): Promise<readonly R[]> {
    return this.#once(this.#results, vertex, async (v) => {
      const key = await this.#key(v);
      if (!v.ignoreCache) {
        const hit = await this.#step(v, async () => (await this.#cache.load(key)) ?? (await this.#remote?.load(key, v, { signal: this.#controller.signal, progress: this.#announcing(v) })));
        if (hit !== undefined) {
          this.#held.push(...hit);
          this.#explain?.remember(v, key, await this.#inputKeys(v));
          const now = timestamp();
          this.#emit(v, { started: this.#announced.get(v.digest) ?? now, completed: now, cached: true });
          return hit;
        }
      }
      const reason = this.#explain?.reason(v, key, await this.#inputKeys(v));
      if (reason !== undefined) this.#reasons.set(v.digest, reason);
      v.op.willRun?.();
      const inputs = await Promise.all(v.inputs.map((edge) => this.#output(edge)));
      const run = (): Promise<readonly R[]> =>
        this.#limits.all(() =>
          this.#step(v, async (stepStarted) => {
            const started = this.#announced.get(v.digest) ?? stepStarted;
            this.#emit(v, { started, cached: false });
            const outputs = await v.op.run(inputs, { signal: this.#controller.signal, progress: this.#progress, cacheKey: key });
            this.#held.push(...outputs);
            await this.#cache.save(key, outputs, v);
            this.#explain?.remember(v, key, await this.#inputKeys(v));
            this.#emit(v, { started, completed: timestamp(), cached: false });
            return outputs;
          }),
        );
      // The CPU slot first: an op waiting for one holds no slot of `all`, so the two never wait on each other.
      return v.op.spends === 'wait' ? run() : this.#limits.cpu(run);
    });
  }

  /**
   * Runs one piece of a vertex's own work (key, load, run). Nothing new starts
   * once the solve is aborted; a failure is reported on the vertex and, when it
   * is the first, aborts everything else.
   */
  async #step<T>(vertex: Vertex<R>, work: (started: string) => Promise<T>): Promise<T> {
    this.#controller.signal.throwIfAborted();
    const started = timestamp();
    try {
      return await work(started);
    } catch (err) {
      // Ops that fail once the solve is aborted were stopped by another failure or a cancel: say so rather than repeat its message.
      const stopped = this.#controller.signal.aborted;
      const error = this.#fail(vertex, err);
      this.#emit(vertex, { started, completed: timestamp(), cached: false, error: stopped ? 'cancelled' : error.message });
      throw error;
    }
  }

  /** Names the vertex on the error; the first failure (unless cancelled) aborts the solve. */
  #fail(vertex: Vertex<R>, err: unknown): KilnError {
    const error = withOp(err, vertex.name);
    if (!this.#controller.signal.aborted) {
      this.#failure = error;
      this.#controller.abort(error);
    }
    return error;
  }

  /** The memoized promise for the vertex's digest, started on first use (in-flight dedupe). */
  #once<T>(memo: Map<Digest, Promise<T>>, vertex: Vertex<R>, work: (v: Vertex<R>) => Promise<T>): Promise<T> {
    let promise = memo.get(vertex.digest);
    if (promise === undefined) {
      promise = work(this.#byDigest.get(vertex.digest) ?? vertex);
      memo.set(vertex.digest, promise);
      const settled = promise;
      this.#inFlight.add(settled);
      const forget = (): void => void this.#inFlight.delete(settled);
      void settled.then(forget, forget);
    }
    return promise;
  }

  #emit(vertex: Vertex<R>, state: Pick<VertexEvent, 'started' | 'completed' | 'cached' | 'error'>): void {
    const inputs = [...new Set(vertex.inputs.map((edge) => edge.vertex.digest))];
    const reason = state.cached ? undefined : this.#reasons.get(vertex.digest);
    const { progressGroup } = vertex;
    this.#progress.emit({
      type: 'vertex',
      digest: vertex.digest,
      name: vertex.name,
      inputs,
      ...state,
      ...(reason === undefined ? {} : { reason }),
      ...(progressGroup === undefined ? {} : { progressGroup }),
    });
  }
}

/** Keeps an error that already names its op; otherwise names the vertex, keeping a KilnError's code. */
function withOp(err: unknown, op: string): KilnError {
  if (err instanceof KilnError) {
    if (err.op !== undefined) return err;
    return new OpError(err.code, err.message, { op, cause: err, ...(err.field === undefined ? {} : { field: err.field }) });
  }
  return new OpError(ERROR_CODES.INTERNAL, err instanceof Error ? err.message : String(err), { op, cause: err });
}

function cancelled(signal: AbortSignal): KilnError {
  return new KilnError(ERROR_CODES.CANCELLED, 'the build was cancelled', { cause: signal.reason });
}

function timestamp(): string {
  return new Date().toISOString();
}
