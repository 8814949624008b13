/**
 * Definitions that are large or hostile in size: long chains and cycles of
 * ops, output numbers far beyond what an op holds, long strings. Each must be
 * accepted or rejected at its JSON path quickly, never exhaust the stack,
 * time or memory.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadDefinition } from '../../../src/llb/load.js';
import { assertProblem, IMAGE, problemsOf, withOp } from './problems.js';

/** `count` file ops, each taking the one before; op 0 takes `first` (or is an image). */
function chain(count: number, first?: string): Record<string, unknown> {
  const ops: Record<string, unknown> = {};
  for (let i = 0; i < count; i++) {
    const input = i === 0 ? first : `op${i - 1}`;
    ops[`op${i}`] =
      input === undefined ? IMAGE : { inputs: [input], file: { actions: [{ input: 0, output: 0, mkdir: { path: `/d${i}` } }] } };
  }
  return ops;
}

describe('loadDefinition: long chains and cycles', () => {
  it('loads a chain of 20,000 ops in dependency order', () => {
    const def = loadDefinition({ version: 1, ops: chain(20_000), result: 'op19999' });
    assert.equal(def.ops.size, 20_000);
    assert.deepEqual([...def.ops.keys()].slice(0, 2), ['op0', 'op1']);
    assert.equal([...def.ops.keys()].at(-1), 'op19999');
  });

  it('reports a 10,000-op cycle as a cycle that names its ops', () => {
    // Each op takes the next one on the cycle as its input: op0 takes op9999.
    const problems = problemsOf({ version: 1, ops: chain(10_000, 'op9999'), result: 'op9999' });
    const cycle = problems.find((p) => p.message.startsWith('cycle: '));
    assert.ok(cycle, JSON.stringify(problems.slice(0, 3)));
    assert.equal(cycle.path, 'ops.op0.inputs');
    assert.ok(cycle.message.startsWith('cycle: op0 -> op9999 -> op9998 -> '), cycle.message.slice(0, 80));
    assert.ok(cycle.message.endsWith('op2 -> op1 -> op0'), cycle.message.slice(-80));
  });

  it('reports each of two cycles once, and ops outside them not at all', () => {
    const ops = { ...chain(3, 'op2'), x: { inputs: ['y'], merge: { inputs: [0] } }, y: { inputs: ['x'], merge: { inputs: [0] } } };
    const cycles = problemsOf({ version: 1, ops: { ...ops, free: { inputs: ['x'], merge: { inputs: [0] } } }, result: null });
    assert.deepEqual(
      cycles.map((p) => `${p.path}: ${p.message}`).sort(),
      ['ops.op0.inputs: cycle: op0 -> op2 -> op1 -> op0', 'ops.x.inputs: cycle: x -> y -> x'],
    );
  });
});

describe('loadDefinition: numbers that would size work', () => {
  it('rejects an action output beyond the number of actions at once, without counting up to it', () => {
    const started = Date.now();
    assertProblem(
      { version: 1, ops: { a: { file: { actions: [{ input: -1, output: 2147483648, mkdir: { path: '/x', mode: '0755' } }] } } }, result: 'a' },
      'ops.a.file.actions[0].output',
      '2147483648 is out of range: outputs are numbered from 0 without gaps and the op has 1 action; use -1..0',
    );
    assert.ok(Date.now() - started < 1000);
  });

  it('rejects an exec mount output beyond the number of mounts', () => {
    const exec = { meta: { args: ['/bin/true'] }, mounts: [{ dest: '/', input: 0, output: 2 ** 40 }] };
    assertProblem(withOp({ inputs: ['base'], exec }), 'ops.x.exec.mounts[0].output', 'the op has 1 mount; use -1..0');
  });

  it('lists a few missing outputs, not all of them', () => {
    const actions = Array.from({ length: 500 }, (_, i) => ({ input: -1, output: i === 0 ? 499 : -1, mkdir: { path: `/d${i}` } }));
    assertProblem({ version: 1, ops: { a: { file: { actions } } }, result: null }, 'ops.a.file.actions', 'missing output 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 489 more');
  });
});
