/**
 * The shape of the graph a solve walks: the vertices a target reaches, one
 * per digest, inputs before users. Every walk here is a loop over an explicit
 * stack or queue, never a recursive call: a chain is as deep as it has ops,
 * and a chain of a few thousand ops would overflow the call stack.
 */
import type { Digest } from '../digest.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import type { Vertex } from './types.js';

/**
 * The vertices `root` reaches, one per digest (the first vertex object seen
 * stands for all with that digest), every input before the vertices that use
 * it, `root` last. Throws INTERNAL naming the vertices of one cycle if there
 * is a cycle: the LLB loader rejects cycles, so one reaching the solver is a
 * bug, and solving it would wait forever.
 */
export function topologicalOrder<R>(root: Vertex<R>): Vertex<R>[] {
  const byDigest = new Map<Digest, Vertex<R>>([[root.digest, root]]);
  const todo = [root];
  for (let vertex = todo.pop(); vertex !== undefined; vertex = todo.pop()) {
    for (const { vertex: input } of vertex.inputs) {
      if (!byDigest.has(input.digest)) {
        byDigest.set(input.digest, input);
        todo.push(input);
      }
    }
  }
  // Kahn's algorithm: a vertex is ready once every one of its input edges
  // (counted with repeats, as they are released) has been ordered.
  const waiting = new Map<Digest, number>();
  const users = new Map<Digest, Digest[]>();
  const ready: Vertex<R>[] = [];
  for (const vertex of byDigest.values()) {
    waiting.set(vertex.digest, vertex.inputs.length);
    if (vertex.inputs.length === 0) ready.push(vertex);
    for (const { vertex: input } of vertex.inputs) {
      const list = users.get(input.digest);
      if (list === undefined) users.set(input.digest, [vertex.digest]);
      else list.push(vertex.digest);
    }
  }
  const order: Vertex<R>[] = [];
  for (let vertex = ready.pop(); vertex !== undefined; vertex = ready.pop()) {
    order.push(vertex);
    for (const user of users.get(vertex.digest) ?? []) {
      const left = (waiting.get(user) ?? 0) - 1;
      waiting.set(user, left);
      if (left === 0) ready.push(byDigest.get(user) as Vertex<R>);
    }
  }
  if (order.length < byDigest.size) {
    const names = findCycle(byDigest, waiting).map((vertex) => vertex.name);
    throw new KilnError(ERROR_CODES.INTERNAL, `the build graph has a cycle through ${names.join(', ')}`);
  }
  return order;
}

/**
 * One cycle among the vertices Kahn's algorithm could not order, inputs
 * first. Each of them still waits on an input that is itself unordered, so
 * following such inputs from any of them must come back to a vertex already
 * on the path: the path from there is a cycle.
 */
function findCycle<R>(byDigest: ReadonlyMap<Digest, Vertex<R>>, waiting: ReadonlyMap<Digest, number>): Vertex<R>[] {
  const unordered = (vertex: Vertex<R>): boolean => (waiting.get(vertex.digest) ?? 0) > 0;
  const start = [...byDigest.values()].find(unordered);
  const path: Vertex<R>[] = [];
  const onPath = new Map<Digest, number>();
  let vertex = start;
  while (vertex !== undefined) {
    onPath.set(vertex.digest, path.length);
    path.push(vertex);
    const next = vertex.inputs.map((edge) => byDigest.get(edge.vertex.digest) as Vertex<R>).find(unordered);
    if (next === undefined) break;
    const at = onPath.get(next.digest);
    if (at !== undefined) return path.slice(at).reverse();
    vertex = next;
  }
  // Unreachable when the counts are right; still name what could not be ordered.
  return [...byDigest.values()].filter(unordered);
}
