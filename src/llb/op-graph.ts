/**
 * The walks the loader makes over the graph of ops (each op points at the ops
 * it takes as inputs): cycles, one readable cycle through each, and a
 * dependency order. Every walk keeps its own explicit stack, so a chain of
 * 100,000 ops costs memory, not call-stack depth; and the graph is a Map, so
 * an op named "constructor" or "__proto__" is an ordinary key.
 */

/** Each op's inputs (ops it points at), in the order it lists them; keys are every op. */
export type OpGraph = ReadonlyMap<string, readonly string[]>;

/** A Tarjan frame: the node and how many of its successors were looked at. */
interface Frame {
  readonly node: string;
  next: number;
}

/**
 * The strongly connected components that hold a cycle (two or more ops, or
 * one op that is its own input), found with Tarjan's algorithm run on an
 * explicit stack.
 */
export function findCycles(graph: OpGraph): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const cycles: string[][] = [];
  let counter = 0;

  const enter = (node: string, frames: Frame[]): void => {
    index.set(node, counter);
    low.set(node, counter);
    counter++;
    stack.push(node);
    onStack.add(node);
    frames.push({ node, next: 0 });
  };

  for (const start of graph.keys()) {
    if (index.has(start)) continue;
    const frames: Frame[] = [];
    enter(start, frames);
    while (frames.length > 0) {
      const frame = frames[frames.length - 1] as Frame;
      const successors = graph.get(frame.node) ?? [];
      if (frame.next < successors.length) {
        const next = successors[frame.next++] as string;
        if (!graph.has(next)) continue;
        if (!index.has(next)) enter(next, frames);
        else if (onStack.has(next)) low.set(frame.node, Math.min(low.get(frame.node) ?? 0, index.get(next) ?? 0));
        continue;
      }
      // Every successor is done: close the frame, and pass its low link up.
      frames.pop();
      const nodeLow = low.get(frame.node) ?? 0;
      const parent = frames[frames.length - 1];
      if (parent !== undefined) low.set(parent.node, Math.min(low.get(parent.node) ?? 0, nodeLow));
      if (nodeLow !== index.get(frame.node)) continue;
      const component: string[] = [];
      let member: string | undefined;
      do {
        member = stack.pop();
        if (member === undefined) break;
        onStack.delete(member);
        component.push(member);
      } while (member !== frame.node);
      if (component.length > 1 || successors.includes(frame.node)) cycles.push(component);
    }
  }
  return cycles;
}

/**
 * The ops of a strongly connected component in the order of one cycle
 * through them (each takes the next as an input), starting from the
 * alphabetically first so the message is stable. Breadth-first, so it is a
 * shortest such cycle.
 */
export function cycleThrough(graph: OpGraph, component: readonly string[]): string[] {
  const members = new Set(component);
  const start = [...component].sort()[0] ?? '';
  const parent = new Map<string, string>();
  const queue = [start];
  for (const node of queue) {
    for (const next of graph.get(node) ?? []) {
      if (next === start) {
        const cycle = [node];
        for (let p = parent.get(node); p !== undefined; p = parent.get(p)) cycle.push(p);
        return cycle.reverse();
      }
      if (members.has(next) && !parent.has(next)) {
        parent.set(next, node);
        queue.push(next);
      }
    }
  }
  return [...component];
}

/**
 * The ops reachable from `roots`, each after all of its inputs (a depth-first
 * postorder). The graph must be acyclic.
 */
export function dependencyOrder(graph: OpGraph, roots: readonly string[]): string[] {
  const order: string[] = [];
  const seen = new Set<string>();
  for (const root of roots) {
    if (seen.has(root) || !graph.has(root)) continue;
    seen.add(root);
    const frames: Frame[] = [{ node: root, next: 0 }];
    while (frames.length > 0) {
      const frame = frames[frames.length - 1] as Frame;
      const successors = graph.get(frame.node) ?? [];
      if (frame.next < successors.length) {
        const next = successors[frame.next++] as string;
        if (!seen.has(next) && graph.has(next)) {
          seen.add(next);
          frames.push({ node: next, next: 0 });
        }
        continue;
      }
      frames.pop();
      order.push(frame.node);
    }
  }
  return order;
}
