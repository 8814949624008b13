import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { getMaxListeners } from 'node:events';
import { availableParallelism } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { digestOf, sha256 } from '../../../src/digest.js';
import type { CacheKey } from '../../../src/digest.js';
import { ERROR_CODES, KilnError, OpError } from '../../../src/errors.js';
import type { ProgressEvent, VertexEvent } from '../../../src/progress/types.js';
import { defaultParallelism, solve } from '../../../src/solver/solve.js';
import type { SolveOptions } from '../../../src/solver/solve.js';
import type { Edge, RerunExplainer, ResultCache, RunContext, Vertex } from '../../../src/solver/types.js';
import { FakeCache, type Handle } from '../../support/fake-result-cache.js';

interface FakeOptions {
  /** Changes the cache key (not the digest): an edited leaf. */
  readonly salt?: string;
  readonly digest?: string;
  readonly ignoreCache?: boolean;
  readonly outputs?: number;
  /** Runs inside op.run before the outputs are made. */
  readonly during?: (ctx: RunContext) => Promise<void>;
  readonly spends?: 'cpu' | 'wait';
}

type FakeVertex = Vertex<Handle> & { readonly counts: { keys: number; runs: number }; lastKey?: CacheKey };

/** Fake vertices over one cache, recording progress, run order and concurrency. */
function harness() {
  const cache = new FakeCache();
  const events: VertexEvent[] = [];
  const log: string[] = [];
  let running = 0;
  let maxRunning = 0;
  const inputsReleasedDuringRun: string[] = [];

  function vertex(name: string, inputs: readonly (FakeVertex | Edge<Handle>)[] = [], options: FakeOptions = {}): FakeVertex {
    const counts = { keys: 0, runs: 0 };
    const edges = inputs.map((i) => ('vertex' in i ? i : { vertex: i, output: 0 }));
    const v: FakeVertex = {
      digest: sha256(options.digest ?? name),
      name,
      inputs: edges,
      ignoreCache: options.ignoreCache ?? false,
      counts,
      op: {
        ...(options.spends === undefined ? {} : { spends: options.spends }),
        async cacheKey({ inputKeys }) {
          counts.keys += 1;
          v.lastKey = digestOf({ name: options.digest ?? name, salt: options.salt, inputKeys }) as string as CacheKey;
          return v.lastKey;
        },
        async run(runInputs, ctx) {
          counts.runs += 1;
          running += 1;
          maxRunning = Math.max(maxRunning, running);
          log.push(`start ${name}`);
          try {
            if (runInputs.some((h) => h.released > 0)) inputsReleasedDuringRun.push(name);
            await options.during?.(ctx);
            const body = `${name}(${runInputs.map((h) => h.value).join(',')})`;
            return Array.from({ length: options.outputs ?? 1 }, (_, i) => cache.handle(i === 0 ? body : `${body}#${i}`));
          } finally {
            running -= 1;
            log.push(`end ${name}`);
          }
        },
      },
    };
    return v;
  }

  function run(target: FakeVertex | Edge<Handle>, options: Partial<SolveOptions<Handle>> = {}): Promise<Handle> {
    const edge = 'vertex' in target ? target : { vertex: target, output: 0 };
    return solve(edge, { cache, parallelism: 4, progress: { emit: (e) => void (e.type === 'vertex' && events.push(e)) }, ...options });
  }

  return {
    cache,
    events,
    log,
    vertex,
    run,
    get maxRunning() {
      return maxRunning;
    },
    inputsReleasedDuringRun,
  };
}

/** Asserts the handed-over result is live, releases it, then that every handle was released exactly once. */
async function assertBalanced(cache: FakeCache, result: Handle): Promise<void> {
  assert.equal(result.released, 0, 'the returned result must not be released by the solver');
  await cache.release(result);
  assert.deepEqual(cache.unbalanced(), []);
}

/** Waits until the signal aborts (an op honouring cancellation), then takes `cleanup` ms to clean up. */
function waitForAbort(cleanup: number, done: () => void) {
  return async (ctx: RunContext): Promise<void> => {
    await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve(), { once: true }));
    await sleep(cleanup);
    done();
    throw ctx.signal.reason;
  };
}

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

describe('solve: the signal ops get', () => {
  it('takes many listeners without a warning, and node and undici can still read its limit (getMaxListeners throws on a limit of 0)', async () => {
    const h = harness();
    let limit = -1;
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => void warnings.push(w);
    process.on('warning', onWarning);
    try {
      const leaf = h.vertex('leaf', [], {
        during: async (ctx) => {
          limit = getMaxListeners(ctx.signal);
          for (let i = 0; i < 50; i++) ctx.signal.addEventListener('abort', () => {});
        },
      });
      await assertBalanced(h.cache, await h.run(leaf));
      await sleep(10);
    } finally {
      process.off('warning', onWarning);
    }
    assert.ok(limit >= 1000, `limit ${limit}`);
    assert.deepEqual(warnings.filter((w) => w.name === 'MaxListenersExceededWarning'), []);
  });
});

describe('solve: caching', () => {
  it('runs a miss once, saves it, and reports start and completion', async () => {
    const h = harness();
    const a = h.vertex('a');
    const b = h.vertex('b', [a]);
    const result = await h.run(b);
    assert.equal(result.value, 'b(a())');
    assert.deepEqual([a.counts, b.counts], [{ keys: 1, runs: 1 }, { keys: 1, runs: 1 }]);
    assert.deepEqual(h.cache.saves, [a.lastKey, b.lastKey]);
    assert.deepEqual(
      h.events.map((e) => [e.name, e.cached, e.started !== undefined, e.completed !== undefined, e.inputs]),
      [
        ['a', false, true, false, []],
        ['a', false, true, true, []],
        ['b', false, true, false, [a.digest]],
        ['b', false, true, true, [a.digest]],
      ],
    );
    for (const e of h.events) assert.match(e.started ?? '', ISO);
    assert.deepEqual(h.inputsReleasedDuringRun, []);
    await assertBalanced(h.cache, result);
  });

  it('loads a cached target without solving or loading its inputs, and reports them all cached', async () => {
    const h = harness();
    await h.cache.release(await h.run(h.vertex('c', [h.vertex('b', [h.vertex('a')])])));
    h.cache.loads = [];
    h.events.length = 0;
    const a = h.vertex('a');
    const b = h.vertex('b', [a]);
    const c = h.vertex('c', [b]);
    const result = await h.run(c);
    assert.equal(result.value, 'c(b(a()))');
    assert.deepEqual([a.counts, b.counts, c.counts].map((n) => n.keys), [1, 1, 1]);
    assert.deepEqual([a.counts, b.counts, c.counts].map((n) => n.runs), [0, 0, 0]);
    assert.deepEqual(h.cache.loads, [c.lastKey]);
    assert.deepEqual(h.events.map((e) => e.name).sort(), ['a', 'b', 'c'], 'every step of a cached rebuild is reported');
    for (const hit of h.events) {
      assert.equal(hit.cached, true);
      assert.equal(hit.started, hit.completed);
    }
    await assertBalanced(h.cache, result);
  });

  it('on a miss below a hit, runs only the miss and never touches what is under the hit', async () => {
    const h = harness();
    await h.cache.release(await h.run(h.vertex('c', [h.vertex('b', [h.vertex('a')])])));
    h.cache.loads = [];
    const a = h.vertex('a');
    const b = h.vertex('b', [a]);
    const c = h.vertex('c', [b], { salt: 'edited' });
    const result = await h.run(c);
    assert.deepEqual(h.cache.loads, [c.lastKey, b.lastKey]);
    assert.deepEqual([a.counts.runs, b.counts.runs, c.counts.runs], [0, 0, 1]);
    assert.equal(result.value, 'c(b(a()))');
    await assertBalanced(h.cache, result);
  });

  it('ignoreCache reruns the vertex and saves it again, while its inputs still come from the cache', async () => {
    const h = harness();
    await h.cache.release(await h.run(h.vertex('b', [h.vertex('a')])));
    h.cache.loads = [];
    h.cache.saves = [];
    const a = h.vertex('a');
    const b = h.vertex('b', [a], { ignoreCache: true });
    const result = await h.run(b);
    assert.deepEqual([a.counts.runs, b.counts.runs], [0, 1]);
    assert.deepEqual(h.cache.loads, [a.lastKey]);
    assert.deepEqual(h.cache.saves, [b.lastKey]);
    await assertBalanced(h.cache, result);
  });

  it('a changed leaf key changes the keys of its descendants only', async () => {
    const keys = async (salt: string): Promise<Record<string, CacheKey | undefined>> => {
      const h = harness();
      const a = h.vertex('a', [], { salt });
      const b = h.vertex('b', [a]);
      const c = h.vertex('c');
      const d = h.vertex('d', [b, c]);
      await h.cache.release(await h.run(d));
      return { a: a.lastKey, b: b.lastKey, c: c.lastKey, d: d.lastKey };
    };
    const before = await keys('v1');
    const after = await keys('v2');
    assert.deepEqual(await keys('v1'), before, 'keys are deterministic');
    for (const name of ['a', 'b', 'd']) assert.notEqual(after[name], before[name], name);
    assert.equal(after['c'], before['c']);
  });
});

describe('solve: graph', () => {
  it('runs each vertex of a diamond once, even through distinct objects with one digest', async () => {
    const h = harness();
    const a = h.vertex('a');
    const aAgain = h.vertex('a');
    const b = h.vertex('b', [a]);
    const c = h.vertex('c', [aAgain]);
    const d = h.vertex('d', [b, c]);
    const result = await h.run(d);
    assert.equal(result.value, 'd(b(a()),c(a()))');
    assert.equal(a.counts.runs + aAgain.counts.runs, 1);
    assert.equal(a.counts.keys + aAgain.counts.keys, 1);
    assert.deepEqual([b.counts, c.counts, d.counts], [{ keys: 1, runs: 1 }, { keys: 1, runs: 1 }, { keys: 1, runs: 1 }]);
    assert.equal(h.events.filter((e) => e.name === 'a').length, 2, 'one start and one completion for a');
    await assertBalanced(h.cache, result);
  });

  it('hands over the asked output of a multi-output vertex and releases the others', async () => {
    const h = harness();
    const m = h.vertex('m', [], { outputs: 3 });
    const result = await h.run({ vertex: m, output: 2 });
    assert.equal(result.value, 'm()#2');
    assert.equal(h.cache.handles.filter((x) => x.released === 1).length, 3);
    await assertBalanced(h.cache, result);
  });

  it('fails with INTERNAL naming the op when an edge asks for an output that does not exist', async () => {
    const h = harness();
    const a = h.vertex('a');
    await assert.rejects(h.run({ vertex: a, output: 1 }), (err: unknown) => {
      assert.ok(err instanceof OpError);
      assert.equal(err.code, ERROR_CODES.INTERNAL);
      assert.equal(err.op, 'a');
      assert.match(err.message, /a has 1 output\(s\); output 1 was asked for/);
      return true;
    });
    assert.deepEqual(h.cache.unbalanced(), []);
  });

  it('fails with INTERNAL on a cycle before computing any key', async () => {
    const h = harness();
    const a = h.vertex('a');
    const b = h.vertex('b', [a]);
    (a.inputs as Edge<Handle>[]).push({ vertex: b, output: 0 });
    await assert.rejects(h.run(b), (err: unknown) => {
      assert.ok(err instanceof KilnError);
      assert.equal(err.code, ERROR_CODES.INTERNAL);
      assert.match(err.message, /cycle through (a, b|b, a)$/);
      return true;
    });
    assert.equal(a.counts.keys + b.counts.keys, 0);
  });
});

describe('solve: concurrency', () => {
  it('runs independent vertices at the same time', async () => {
    const h = harness();
    const slow = { during: () => sleep(50) };
    const join = h.vertex('join', [h.vertex('x', [], slow), h.vertex('y', [], slow)]);
    const result = await h.run(join, { parallelism: 2 });
    assert.deepEqual(h.log.slice(0, 2).sort(), ['start x', 'start y']);
    assert.equal(h.log.at(-1), 'end join');
    await assertBalanced(h.cache, result);
  });

  it('never runs more ops at once than the parallelism cap', async () => {
    const h = harness();
    const leaves = Array.from({ length: 6 }, (_, i) => h.vertex(`leaf${i}`, [], { during: () => sleep(15) }));
    const result = await h.run(h.vertex('join', leaves), { parallelism: 2 });
    assert.equal(h.maxRunning, 2);
    await assertBalanced(h.cache, result);
  });

  it('ops that wait (exec) are capped by the parallelism, not by the CPU count', async () => {
    const h = harness();
    const wide = availableParallelism() + 3;
    const leaves = Array.from({ length: wide }, (_, i) => h.vertex(`wait${i}`, [], { spends: 'wait', during: () => sleep(15) }));
    const result = await h.run(h.vertex('join', leaves), { parallelism: wide });
    assert.equal(h.maxRunning, wide);
    await assertBalanced(h.cache, result);
  });

  it('by default, ops that spend CPU are capped at the CPU count too, and waiting ones still start beside them', async () => {
    const h = harness();
    const cpus = availableParallelism();
    const busy = Array.from({ length: cpus + 2 }, (_, i) => h.vertex(`cpu${i}`, [], { during: () => sleep(15) }));
    const waiting = Array.from({ length: 3 }, (_, i) => h.vertex(`wait${i}`, [], { spends: 'wait', during: () => sleep(15) }));
    // No parallelism given: the solver's defaults.
    const result = await solve({ vertex: h.vertex('join', [...busy, ...waiting]), output: 0 }, { cache: h.cache });
    assert.equal(h.maxRunning, Math.min(cpus + 3, defaultParallelism()));
    await assertBalanced(h.cache, result);
  });

  it('a parallelism given caps ops that spend CPU at it, not at the CPU count', async () => {
    const h = harness();
    const wide = availableParallelism() + 2;
    const leaves = Array.from({ length: wide }, (_, i) => h.vertex(`cpu${i}`, [], { during: () => sleep(15) }));
    const result = await h.run(h.vertex('join', leaves), { parallelism: wide });
    assert.equal(h.maxRunning, wide);
    await assertBalanced(h.cache, result);
  });

  it('the default parallelism is at least the CPU count', () => {
    assert.ok(defaultParallelism() >= availableParallelism());
    assert.ok(Number.isInteger(defaultParallelism()));
  });

  it('rejects a parallelism that is not a positive integer', async () => {
    const h = harness();
    await assert.rejects(h.run(h.vertex('a'), { parallelism: 0 }), { code: ERROR_CODES.USAGE });
  });
});

describe('solve: failure and cancellation', () => {
  it('the first failure aborts the others, waits for their cleanup, and is rethrown with the op name', async () => {
    const h = harness();
    let cleanedUp = false;
    const x = h.vertex('x', [], {
      during: async () => {
        await sleep(10);
        throw new KilnError(ERROR_CODES.EXEC_FAILED, 'process exited with code 1');
      },
    });
    const y = h.vertex('y', [], { during: waitForAbort(30, () => (cleanedUp = true)) });
    const queued = h.vertex('queued');
    const done = h.vertex('done');
    await h.cache.release(await h.run(done));
    const top = h.vertex('top', [x, y, queued, done]);
    await assert.rejects(h.run(top, { parallelism: 2 }), (err: unknown) => {
      assert.ok(err instanceof OpError);
      assert.equal(err.code, ERROR_CODES.EXEC_FAILED);
      assert.equal(err.op, 'x');
      assert.equal(err.message, 'process exited with code 1');
      assert.ok(err.cause instanceof KilnError);
      return true;
    });
    assert.equal(cleanedUp, true, 'y had cleaned up before solve rejected');
    assert.deepEqual([queued.counts.runs, top.counts.runs], [0, 0]);
    const outcome = (name: string): string | undefined => h.events.find((e) => e.name === name && e.completed !== undefined)?.error;
    assert.equal(outcome('x'), 'process exited with code 1');
    assert.equal(outcome('y'), 'cancelled');
    assert.equal(h.events.some((e) => e.name === 'top' || e.name === 'queued'), false);
    assert.deepEqual(h.cache.unbalanced(), []);
  });

  it('keeps an error that already names its op, and wraps plain errors as INTERNAL', async () => {
    const h = harness();
    const named = new KilnError(ERROR_CODES.FILE_ACTION, 'chown: no user app', { op: 'file1' });
    const a = h.vertex('a', [], { during: () => Promise.reject(named) });
    await assert.rejects(h.run(a), (err: unknown) => err === named);
    const b = h.vertex('b', [], { during: () => Promise.reject(new TypeError('boom')) });
    await assert.rejects(h.run(b), { name: 'OpError', code: ERROR_CODES.INTERNAL, op: 'b', message: 'boom' });
  });

  it('a failing cache key is reported on its vertex', async () => {
    const h = harness();
    const a = h.vertex('a');
    const broken: Vertex<Handle> = {
      ...h.vertex('src'),
      op: { cacheKey: () => Promise.reject(new KilnError(ERROR_CODES.LOCAL_SOURCE, 'no --local ctx')), run: () => Promise.resolve([]) },
    };
    await assert.rejects(h.run(h.vertex('top', [a, { vertex: broken, output: 0 }])), { code: ERROR_CODES.LOCAL_SOURCE, op: 'src' });
    assert.deepEqual(
      h.events.filter((e) => e.error !== undefined).map((e) => [e.name, e.error]),
      [['src', 'no --local ctx']],
    );
  });

  it('cancellation aborts running ops, waits for them, runs nothing new and throws CANCELLED with the reason', async () => {
    const h = harness();
    let cleanedUp = false;
    const y = h.vertex('y', [], { during: waitForAbort(20, () => (cleanedUp = true)) });
    const after = h.vertex('after', [y]);
    const controller = new AbortController();
    const reason = new Error('interrupted');
    setTimeout(() => controller.abort(reason), 20);
    await assert.rejects(h.run(after, { signal: controller.signal }), (err: unknown) => {
      assert.ok(err instanceof KilnError);
      assert.equal(err.code, ERROR_CODES.CANCELLED);
      assert.equal(err.cause, reason);
      return true;
    });
    assert.equal(cleanedUp, true);
    assert.equal(after.counts.runs, 0, 'nothing starts after the cancel');
    assert.equal(h.events.find((e) => e.name === 'y' && e.completed !== undefined)?.error, 'cancelled');
    assert.deepEqual(h.cache.unbalanced(), []);
  });

  it('a cancel that the running op ignores still ends in CANCELLED, with its result released', async () => {
    const h = harness();
    const controller = new AbortController();
    const a = h.vertex('a', [], { during: async () => controller.abort(new Error('stop')) });
    await assert.rejects(h.run(a, { signal: controller.signal }), { code: ERROR_CODES.CANCELLED });
    assert.equal(a.counts.runs, 1);
    assert.deepEqual(h.cache.unbalanced(), []);
  });

  it('an already aborted signal computes nothing', async () => {
    const h = harness();
    const a = h.vertex('a');
    const reason = new Error('too late');
    await assert.rejects(h.run(a, { signal: AbortSignal.abort(reason) }), { code: ERROR_CODES.CANCELLED, cause: reason });
    assert.deepEqual(a.counts, { keys: 0, runs: 0 });
  });
});

describe('solve: deep graphs', () => {
  /** A chain of `n` vertices, each on the previous one; returns them bottom first. */
  function chain(h: ReturnType<typeof harness>, n: number, options: (i: number) => FakeOptions = () => ({})): FakeVertex[] {
    const vertices: FakeVertex[] = [];
    for (let i = 0; i < n; i++) vertices.push(h.vertex(`v${i}`, i === 0 ? [] : [vertices[i - 1] as FakeVertex], options(i)));
    return vertices;
  }

  it('solves a 20,000-vertex chain, then loads it from the cache with one lookup (no walk recurses per vertex)', async () => {
    // Leaner than the harness's fakes (which log every step), so that the
    // test measures the solver's walks, not the fakes' garbage.
    const n = 20_000;
    const store = new Map<CacheKey, number[]>();
    let loads = 0;
    let runs = 0;
    let cachedEvents = 0;
    const cache: ResultCache<number> = {
      load: async (key) => (loads++, store.get(key)),
      save: async (key, outputs) => void store.set(key, [...outputs]),
      release: async () => {},
      retain: (value) => value,
    };
    const build = (): Vertex<number> => {
      let top: Vertex<number> | undefined;
      for (let i = 0; i < n; i++) {
        const inputs = top === undefined ? [] : [{ vertex: top, output: 0 }];
        top = {
          digest: sha256(`v${i}`),
          name: `v${i}`,
          inputs,
          ignoreCache: false,
          op: {
            cacheKey: async ({ inputKeys }) => sha256(`v${i}:${inputKeys.join()}`) as string as CacheKey,
            run: async () => [(runs++, i)],
          },
        };
      }
      return top as Vertex<number>;
    };
    const progress = { emit: (e: ProgressEvent) => void (e.type === 'vertex' && e.cached && cachedEvents++) };
    assert.equal(await solve({ vertex: build(), output: 0 }, { cache, progress }), n - 1);
    assert.deepEqual([runs, store.size], [n, n]);
    loads = 0;
    assert.equal(await solve({ vertex: build(), output: 0 }, { cache, progress }), n - 1);
    assert.deepEqual([loads, runs, cachedEvents], [1, n, n], 'one lookup, nothing run, every vertex reported cached');
  });

  it('a failure at the bottom of a 10,000-vertex chain fails the solve, naming that vertex', async () => {
    const h = harness();
    const vertices = chain(h, 10_000, (i) => (i === 0 ? { during: async () => Promise.reject(new Error('broken')) } : {}));
    await assert.rejects(h.run(vertices.at(-1) as FakeVertex), (err: unknown) => {
      assert.ok(err instanceof OpError);
      assert.equal(err.op, 'v0');
      return true;
    });
    assert.ok(vertices.slice(1).every((v) => v.counts.runs === 0));
    assert.deepEqual(h.cache.unbalanced(), []);
  });

  it('reports a cycle through 10,000 vertices as a cycle, naming them inputs first, before computing any key', async () => {
    const h = harness();
    const n = 10_000;
    const vertices = chain(h, n);
    const top = vertices.at(-1) as FakeVertex;
    const bottom = vertices[0] as FakeVertex;
    (bottom.inputs as Edge<Handle>[]).push({ vertex: top, output: 0 });
    await assert.rejects(h.run(top), (err: unknown) => {
      assert.ok(err instanceof KilnError);
      assert.equal(err.code, ERROR_CODES.INTERNAL);
      const names = /cycle through (.*)$/.exec(err.message)?.[1]?.split(', ') ?? [];
      assert.equal(names.length, n);
      // Each vertex named is an input of the next (and the last of the first).
      for (let i = 1; i < n; i++) assert.equal(names[i], `v${(Number(names[i - 1]?.slice(1)) + 1) % n}`);
      return true;
    });
    assert.ok(vertices.every((v) => v.counts.keys === 0));
  });

  it('names only the cycle, not the vertices that merely lead to it', async () => {
    const h = harness();
    const a = h.vertex('a');
    const b = h.vertex('b', [a]);
    const c = h.vertex('c', [b]);
    const d = h.vertex('d', [c]);
    (b.inputs as Edge<Handle>[]).push({ vertex: c, output: 0 });
    await assert.rejects(h.run(d), /cycle through (b, c|c, b)$/);
  });
});

describe('solve: rerun reasons', () => {
  /** An explainer that says "first-build" to every vertex and records every call. */
  function recordingExplainer() {
    const asked: { name: string; key: CacheKey; inputKeys: readonly CacheKey[] }[] = [];
    const remembered: { name: string; key: CacheKey; inputKeys: readonly CacheKey[] }[] = [];
    const explain: RerunExplainer<Handle> = {
      reason: (vertex, key, inputKeys) => {
        asked.push({ name: vertex.name, key, inputKeys });
        return { kind: 'first-build' };
      },
      remember: (vertex, key, inputKeys) => void remembered.push({ name: vertex.name, key, inputKeys }),
    };
    return { explain, asked, remembered };
  }

  it('asks only for vertices that run, puts the reason on their events, and remembers what ran and what loaded', async () => {
    const h = harness();
    const a = h.vertex('a');
    const b = h.vertex('b', [a]);
    await assertBalanced(h.cache, await h.run(b));
    const first = recordingExplainer();
    const c = h.vertex('c', [b]);
    await assertBalanced(h.cache, await h.run(c, { explain: first.explain }));
    // b was a hit (a under it never solved): only c is asked, with its key and its input's.
    assert.deepEqual(first.asked, [{ name: 'c', key: c.lastKey, inputKeys: [b.lastKey] }]);
    // a was keyed below b's hit: what it was made of is remembered too.
    assert.deepEqual(first.remembered.map((r) => r.name).sort(), ['a', 'b', 'c']);
    const cEvents = h.events.filter((e) => e.name === 'c');
    assert.ok(cEvents.length >= 2);
    for (const e of cEvents) assert.deepEqual(e.reason, { kind: 'first-build' });
    for (const e of h.events.filter((e) => e.cached)) assert.equal(e.reason, undefined);
  });

  it('an ignoreCache vertex is asked too (it runs); a vertex with no reason has none on its events', async () => {
    const h = harness();
    const a = h.vertex('a', [], { ignoreCache: true });
    await assertBalanced(h.cache, await h.run(a));
    const asked: string[] = [];
    const explain: RerunExplainer<Handle> = { reason: (v) => void asked.push(v.name), remember: () => {} };
    await assertBalanced(h.cache, await h.run(a, { explain }));
    assert.deepEqual(asked, ['a']);
    for (const e of h.events) assert.equal(e.reason, undefined);
  });
});

describe('solve: imported caches (the remote hook)', () => {
  it('asks the remote only on a local miss; a remote hit of the target runs nothing and asks nothing below it', async () => {
    const h = harness();
    const a = h.vertex('a');
    const b = h.vertex('b', [a]);
    const c = h.vertex('c', [b]);
    // What another root built: the keys, computed the same way.
    const other = harness();
    const made = await other.run(other.vertex('c', [other.vertex('b', [other.vertex('a')])]));
    await other.cache.release(made);
    const asked: string[] = [];
    const remote = {
      async load(key: CacheKey, vertex: Vertex<Handle>) {
        asked.push(vertex.name);
        const values = other.cache.store.get(key);
        if (values === undefined) return undefined;
        h.cache.store.set(key, values);
        return values.map((v) => h.cache.handle(v));
      },
    };
    const result = await h.run(c, { remote });
    assert.equal(result.value, 'c(b(a()))');
    assert.deepEqual(asked, ['c']);
    assert.deepEqual([a.counts.runs, b.counts.runs, c.counts.runs], [0, 0, 0]);
    assert.ok(h.events.filter((e) => e.completed !== undefined).every((e) => e.cached));
    await assertBalanced(h.cache, result);
  });

  it('a remote miss runs the vertex as before; a changed leaf asks the remote for each vertex above it', async () => {
    const h = harness();
    const asked: string[] = [];
    const remote = {
      async load(_key: CacheKey, vertex: Vertex<Handle>) {
        asked.push(vertex.name);
        return undefined;
      },
    };
    const a = h.vertex('a');
    const b = h.vertex('b', [a]);
    const result = await h.run(b, { remote });
    assert.equal(result.value, 'b(a())');
    assert.deepEqual(asked, ['b', 'a']);
    assert.deepEqual([a.counts.runs, b.counts.runs], [1, 1]);
    await assertBalanced(h.cache, result);
  });
});
