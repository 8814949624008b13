/**
 * Turns a loaded definition into solver vertices. Ops with equal definition
 * digests become one vertex (the same work is never done twice in a solve).
 */
import type { ResultRef } from '../cache/types.js';
import type { CacheKey } from '../digest.js';
import { assertNever, ERROR_CODES, KilnError } from '../errors.js';
import { opDisplayName } from '../llb/op-name.js';
import type { Definition, Op } from '../llb/types.js';
import type { Edge, SolverOp, Vertex } from '../solver/types.js';
import { execOp } from './exec-op.js';
import { fileOp } from './file-op.js';
import { diffOp, mergeOp } from './merge-diff.js';
import { sourceOp } from './source-op.js';
import type { OpContext } from './types.js';

/** Context for each op: the same bindings, and the worker chosen for that op (by its constraints). */
export type OpContextFor = (op: Op) => OpContext;

/**
 * Which ops rerun whatever the cache holds: `true` every op (buildctl's
 * `--no-cache`), or the ops named (`--no-cache-filter`) and every op built
 * on them. Their new results replace the cached ones.
 */
export type NoCache = boolean | readonly string[];

/** How to build the graph. */
export interface BuildGraphOptions {
  readonly noCache?: NoCache;
  /** Told each vertex's cache key as the solver computes it (what `--export-cache` exports under). */
  readonly onKey?: (vertex: { readonly digest: string; readonly name: string }, key: CacheKey) => void;
}

/** The edge of the definition's result, or null when the result is scratch. */
export function buildGraph(definition: Definition, contextFor: OpContextFor, options: BuildGraphOptions = {}): Edge<ResultRef> | null {
  const rerun = noCacheOps(definition, options.noCache ?? false);
  if (definition.result === null) return null;
  const byDigest = new Map<string, Vertex<ResultRef>>();
  const byName = new Map<string, Vertex<ResultRef>>();
  // definition.ops is topologically ordered: inputs are built before users.
  for (const op of definition.ops.values()) {
    let vertex = byDigest.get(op.digest);
    if (vertex === undefined) {
      vertex = {
        digest: op.digest,
        name: opDisplayName(op),
        ...(op.metadata.progressGroup === undefined ? {} : { progressGroup: op.metadata.progressGroup }),
        inputs: op.inputs.map((input) => ({ vertex: lookup(byName, input.op), output: input.output })),
        op: observed(solverOp(op, contextFor(op)), { digest: op.digest, name: opDisplayName(op) }, options.onKey),
        ignoreCache: op.metadata.ignoreCache || rerun.has(op.name),
      };
      byDigest.set(op.digest, vertex);
    }
    byName.set(op.name, vertex);
  }
  return { vertex: lookup(byName, definition.result.op), output: definition.result.output };
}

/**
 * The names of the ops `noCache` reruns: the named ones and their
 * descendants (their inputs changed, so they must run on the new results).
 * A name the definition's build does not have is refused, so a typo never
 * passes for a cached build.
 */
export function noCacheOps(definition: Definition, noCache: NoCache): ReadonlySet<string> {
  if (noCache === false) return new Set();
  if (noCache === true) return new Set(definition.ops.keys());
  const unknown = noCache.filter((name) => !definition.ops.has(name));
  if (unknown.length > 0) {
    const names = unknown.map((n) => `"${n}"`).join(', ');
    throw new KilnError(ERROR_CODES.USAGE, `no-cache filter: the build has no op named ${names} (ops the result uses: ${[...definition.ops.keys()].slice(0, 20).join(', ')}${definition.ops.size > 20 ? ', ...' : ''})`);
  }
  const rerun = new Set(noCache);
  // definition.ops is topologically ordered: an op's inputs are decided before it.
  for (const op of definition.ops.values()) if (op.inputs.some((input) => rerun.has(input.op))) rerun.add(op.name);
  return rerun;
}

/** The op, with its computed keys told to `onKey`. */
function observed(op: SolverOp<ResultRef>, vertex: { readonly digest: string; readonly name: string }, onKey: BuildGraphOptions['onKey']): SolverOp<ResultRef> {
  if (onKey === undefined) return op;
  // Each method is called on `op`, so it keeps its receiver.
  return {
    cacheKey: async (ctx) => {
      const key = await op.cacheKey(ctx);
      onKey(vertex, key);
      return key;
    },
    run: (inputs, ctx) => op.run(inputs, ctx),
    ...(op.willRun === undefined ? {} : { willRun: () => op.willRun?.() }),
    // Lost, an exec op would count as CPU work and wait for a CPU slot.
    ...(op.spends === undefined ? {} : { spends: op.spends }),
  };
}

function lookup(byName: ReadonlyMap<string, Vertex<ResultRef>>, name: string): Vertex<ResultRef> {
  const vertex = byName.get(name);
  if (vertex === undefined) throw new KilnError(ERROR_CODES.INTERNAL, `op "${name}" used before it was built`);
  return vertex;
}

function solverOp(op: Op, ctx: OpContext): SolverOp<ResultRef> {
  const body = op.body;
  switch (body.kind) {
    case 'source':
      return sourceOp({ ...op, body }, ctx);
    case 'exec':
      return execOp({ ...op, body }, ctx);
    case 'file':
      return fileOp({ ...op, body }, ctx);
    case 'merge':
      return mergeOp({ ...op, body }, ctx);
    case 'diff':
      return diffOp({ ...op, body }, ctx);
    default:
      return assertNever(body, 'op kind');
  }
}
