/**
 * The vertices buildGraph makes keep what their ops say of themselves: an
 * exec op waits on a process (`spends: 'wait'`), so the solver does not hold
 * it to a CPU slot, whether or not its keys are observed (onKey, which the
 * history and cache export use).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadDefinition } from '../../../src/llb/load.js';
import type { OpContext } from '../../../src/ops/types.js';
import { buildGraph } from '../../../src/ops/graph.js';

const definition = loadDefinition({
  version: 1,
  ops: {
    base: { file: { actions: [{ input: -1, output: 0, mkdir: { path: '/x', mode: '0755' } }] } },
    step: { inputs: ['base'], exec: { meta: { args: ['/bin/true'] }, mounts: [{ dest: '/', input: 0, output: 0 }] } },
  },
  result: 'step',
});

describe('buildGraph', () => {
  for (const observed of [false, true]) {
    it(`an exec vertex spends its time waiting${observed ? ', with onKey' : ''}; a file vertex spends CPU`, () => {
      // Nothing runs: the context is only handed to the ops.
      const context = {} as OpContext;
      const target = buildGraph(definition, () => context, observed ? { onKey: () => {} } : {});
      assert.ok(target !== null);
      assert.equal(target.vertex.op.spends, 'wait');
      assert.notEqual(target.vertex.inputs[0]?.vertex.op.spends, 'wait');
    });
  }
});
