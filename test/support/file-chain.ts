/**
 * Chains of file ops for tests and benches of deep graphs: op `fI` writes
 * `/fI` on op `f(I-1)`, so a chain of N ops is N deep and its result holds N
 * files.
 */
import { digestOf } from '../../src/digest.js';
import { DefinitionBuilder, mkfile } from '../../src/llb/builder.js';
import { canonicalOp } from '../../src/llb/canonical.js';
import type { RawDefinition } from '../../src/llb/json-types.js';
import { loadDefinition } from '../../src/llb/load.js';
import type { Definition, Op } from '../../src/llb/types.js';

/** The chain as JSON LLB, what a file holds (for timing the loader). */
export function rawFileChain(depth: number): RawDefinition {
  const b = new DefinitionBuilder();
  let top = b.file('f0', [mkfile('/f0', '0')]);
  for (let i = 1; i < depth; i++) top = b.file(`f${i}`, [mkfile(`/f${i}`, String(i))], { input: top });
  return b.build(top);
}

/**
 * The chain already loaded, as solve() takes it. Two ops go through the
 * loader; the others are copies of the second, their digests taken the
 * loader's way, so that a solve of a deep chain does not depend on how deep
 * a graph the loader accepts (the loader's own tests say that).
 */
export function loadedFileChain(depth: number): Definition {
  const two = loadDefinition(rawFileChain(2));
  const first = two.ops.get('f0') as Op;
  const template = two.ops.get('f1') as Op;
  if (template.body.kind !== 'file' || template.body.file.actions[0]?.kind !== 'mkfile') throw new Error('f1 is not a mkfile op');
  const action = template.body.file.actions[0];
  const ops = new Map<string, Op>([[first.name, first]]);
  let previous = first;
  for (let i = 1; i < depth; i++) {
    const parts = {
      ...template,
      name: `f${i}`,
      inputs: [{ op: previous.name, output: 0 }],
      body: { kind: 'file' as const, file: { actions: [{ ...action, mkfile: { ...action.mkfile, path: `/f${i}`, data: new TextEncoder().encode(String(i)) } }] } },
    };
    const op: Op = { ...parts, digest: digestOf(canonicalOp(parts, [previous.digest])) };
    ops.set(op.name, op);
    previous = op;
  }
  return { version: 1, ops, result: { op: previous.name, output: 0 } };
}
