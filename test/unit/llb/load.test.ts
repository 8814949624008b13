import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { ERROR_CODES, ValidationError } from '../../../src/errors.js';
import { hostPlatform, loadDefinition, parseDefinition } from '../../../src/llb/load.js';
import type { Op } from '../../../src/llb/types.js';
import { assertProblem, execOp, IMAGE, problemsOf, withOp } from './problems.js';

const FIXTURES = new URL('../../../../test/fixtures/llb/', import.meta.url);
const MERGE_ONE = { merge: { inputs: [0] } };

function only<T>(value: T | undefined): T {
  assert.ok(value !== undefined);
  return value;
}

describe('loadDefinition: top level', () => {
  it('loads an empty definition whose result is scratch', () => {
    const def = loadDefinition({ version: 1, ops: {}, result: null });
    assert.equal(def.ops.size, 0);
    assert.equal(def.result, null);
    assert.equal(def.image, undefined);
  });

  it('rejects a root that is not an object', () => {
    assertProblem([], '(root)', 'expected an object, got an array');
    assertProblem(null, '(root)', 'expected an object, got null');
  });

  it('requires version 1', () => {
    assertProblem({ version: 2, ops: {}, result: null }, 'version', 'unsupported version: expected 1, got number 2');
    assertProblem({ ops: {}, result: null }, 'version', 'required field is missing');
  });

  it('requires ops to be an object and result to be present', () => {
    assertProblem({ version: 1, ops: [], result: null }, 'ops', 'expected an object, got an array');
    assertProblem({ version: 1, ops: {} }, 'result', 'required field is missing');
  });

  it('reports unknown fields with a hint when one is close', () => {
    assertProblem({ version: 1, ops: {}, result: null, reslt: null }, 'reslt', 'unknown field "reslt" (did you mean "result"?)');
    assertProblem({ version: 1, ops: {}, result: null, zzz: 1 }, 'zzz', 'unknown field "zzz"');
    const problems = problemsOf({ version: 1, ops: {}, result: null, zzz: 1 });
    assert.ok(!problems.some((p) => p.message.includes('did you mean')), 'no hint when nothing is close');
  });

  it('rejects op names outside the allowed alphabet, with a bracketed path', () => {
    assertProblem({ version: 1, ops: { '-bad': IMAGE }, result: null }, 'ops["-bad"]', 'invalid op name "-bad"');
    assertProblem({ version: 1, ops: { [`a${'b'.repeat(128)}`]: IMAGE }, result: null }, `ops.a${'b'.repeat(128)}`, 'at most 128');
  });

  it('collects every problem in the file, not only the first', () => {
    const problems = problemsOf({ version: 3, ops: { a: { source: {} }, b: { merge: { inputs: [] } } }, result: 'c' });
    assert.deepEqual(
      problems.map((p) => p.path),
      ['version', 'ops.a.source.identifier', 'ops.b.merge.inputs', 'result'],
    );
  });

  it('throws a ValidationError carrying the file name and the first problem', () => {
    try {
      loadDefinition({ version: 1, ops: {}, result: 'nope' }, { file: 'build.json' });
      assert.fail('expected a ValidationError');
    } catch (err) {
      assert.ok(err instanceof ValidationError);
      assert.equal(err.code, ERROR_CODES.INVALID_DEFINITION);
      assert.equal(err.file, 'build.json');
      assert.equal(err.message, 'build.json: result: no op named "nope"');
    }
  });
});

describe('loadDefinition: ops', () => {
  it('requires exactly one body', () => {
    assertProblem(withOp({}), 'ops.x', 'an op needs one of source, exec, file, merge or diff');
    assertProblem(withOp({ ...IMAGE, ...MERGE_ONE, inputs: ['base'] }), 'ops.x', 'has both source and merge; an op is exactly one of');
  });

  it('hints at the body kind a typo meant', () => {
    assertProblem(withOp({ inputs: ['base'], mrege: { inputs: [0] } }), 'ops.x.mrege', 'did you mean "merge"?');
  });

  it('resolves inputs by name and by { op, output }', () => {
    const def = loadDefinition(withOp({ inputs: ['base', { op: 'base', output: 0 }], merge: { inputs: [0, 1] } }));
    assert.deepEqual(only(def.ops.get('x')).inputs, [
      { op: 'base', output: 0 },
      { op: 'base', output: 0 },
    ]);
  });

  it('reports inputs naming no op, with a hint', () => {
    assertProblem(withOp({ inputs: ['bsae'], ...MERGE_ONE }), 'ops.x.inputs[0]', 'no op named "bsae" (did you mean "base"?)');
  });

  it('reports inputs that are neither a name nor { op, output }', () => {
    assertProblem(withOp({ inputs: [5], ...MERGE_ONE }), 'ops.x.inputs[0]', 'expected an op name or { "op": NAME, "output": N }');
    assertProblem(withOp({ inputs: [{ op: 'base', output: -1 }], ...MERGE_ONE }), 'ops.x.inputs[0].output', 'must be >= 0');
  });

  it('reports an output index the input op does not have', () => {
    assertProblem(withOp({ inputs: [{ op: 'base', output: 1 }], ...MERGE_ONE }), 'ops.x.inputs[0]', 'op "base" has 1 output, so output 1 does not exist');
  });

  it('reports an input op that has no outputs at all', () => {
    const silent = { inputs: ['base'], exec: { meta: { args: ['true'] }, mounts: [{ dest: '/', input: 0 }] } };
    assertProblem(withOp({ inputs: ['silent'], ...MERGE_ONE }, { silent }), 'ops.x.inputs[0]', 'op "silent" has no outputs');
  });

  it('rejects inputs on a source op', () => {
    assertProblem(withOp({ inputs: ['base'], ...IMAGE }), 'ops.x.inputs', 'a source op takes no inputs');
  });

  it('reports cycles with the names on them', () => {
    const json = {
      version: 1,
      ops: { c: { inputs: ['a'], ...MERGE_ONE }, a: { inputs: ['b'], ...MERGE_ONE }, b: { inputs: ['c'], ...MERGE_ONE } },
      result: 'a',
    };
    assertProblem(json, 'ops.a.inputs', 'cycle: a -> b -> c -> a');
    assertProblem({ version: 1, ops: { self: { inputs: ['self'], ...MERGE_ONE } }, result: null }, 'ops.self.inputs', 'cycle: self -> self');
  });

  it('requires os and architecture in a platform and defaults the variant', () => {
    assertProblem(withOp({ ...IMAGE, platform: { os: 'linux' } }), 'ops.x.platform.architecture', 'required field is missing');
    const def = loadDefinition(withOp({ ...IMAGE, platform: { os: 'linux', architecture: 'riscv64' } }));
    assert.deepEqual(only(def.ops.get('x')).platform, { os: 'linux', architecture: 'riscv64', variant: '' });
  });

  it('defaults the platform to the host platform, or to the one given', () => {
    const arch = { x64: 'amd64', arm64: 'arm64', arm: 'arm' }[process.arch as string];
    if (arch !== undefined) assert.deepEqual(hostPlatform(), { os: 'linux', architecture: arch, variant: '' });
    assert.deepEqual(only(loadDefinition(withOp(IMAGE)).ops.get('x')).platform, hostPlatform());
    const target = { os: 'linux', architecture: 's390x', variant: '' };
    assert.deepEqual(only(loadDefinition(withOp(IMAGE), { hostPlatform: target }).ops.get('x')).platform, target);
  });

  it('accepts constraints on the known fields and rejects others', () => {
    const constraints = ['id==w1', 'executor!=containerd', 'snapshotter==overlayfs', 'platform==linux/amd64', 'labels.gpu==true'];
    assert.deepEqual(only(loadDefinition(withOp({ ...IMAGE, constraints })).ops.get('x')).constraints, constraints);
    assertProblem(withOp({ ...IMAGE, constraints: ['id==a', 'color==red'] }), 'ops.x.constraints[1]', 'FIELD==VALUE or FIELD!=VALUE');
    assertProblem(withOp({ ...IMAGE, constraints: ['labels.==x'] }), 'ops.x.constraints[0]', 'labels.KEY');
    assertProblem(withOp({ ...IMAGE, constraints: ['id=w1'] }), 'ops.x.constraints[0]', 'got "id=w1"');
  });

  it('checks metadata and fills its defaults', () => {
    assertProblem(withOp({ ...IMAGE, metadata: { description: { note: 5 } } }), 'ops.x.metadata.description.note', 'expected a string');
    assertProblem(withOp({ ...IMAGE, metadata: { ignoreCache: 'yes' } }), 'ops.x.metadata.ignoreCache', 'expected true or false');
    assertProblem(withOp({ ...IMAGE, metadata: { progressGroup: { id: 'g' } } }), 'ops.x.metadata.progressGroup.name', 'required');
    assertProblem(withOp({ ...IMAGE, metadata: { ignorecache: true } }), 'ops.x.metadata.ignorecache', 'did you mean "ignoreCache"?');
    assert.deepEqual(only(loadDefinition(withOp(IMAGE)).ops.get('x')).metadata, { description: {}, ignoreCache: false });
  });
});

describe('loadDefinition: merge and diff', () => {
  it('requires merge inputs to be a non-empty list of input indexes', () => {
    assertProblem(withOp({ inputs: ['base'], merge: { inputs: [] } }), 'ops.x.merge.inputs', 'must not be empty');
    assertProblem(withOp({ inputs: ['base'], merge: { inputs: [0, 1] } }), 'ops.x.merge.inputs[1]', '1 is out of range: the op has 1 input; use 0');
    assertProblem(withOp({ inputs: ['base'], merge: { inputs: [-1] } }), 'ops.x.merge.inputs[0]', 'out of range');
    assertProblem(withOp({ inputs: ['base', 'base'], merge: { inputs: [2] } }), 'ops.x.merge.inputs[0]', '2 is out of range: the op has 2 inputs; use 0..1');
    assertProblem(withOp({ merge: { inputs: [0] } }), 'ops.x.merge.inputs[0]', 'the op has no inputs');
  });

  it('requires diff lower and upper within -1..inputs-1', () => {
    assertProblem(withOp({ inputs: ['base'], diff: { lower: -2, upper: 0 } }), 'ops.x.diff.lower', 'use -1 (scratch) or 0 (the op\'s inputs)');
    assertProblem(withOp({ inputs: ['base'], diff: { lower: 0 } }), 'ops.x.diff.upper', 'required field is missing');
    const def = loadDefinition(withOp({ inputs: ['base'], diff: { lower: -1, upper: 0 } }));
    assert.deepEqual(only(def.ops.get('x')).body, { kind: 'diff', diff: { lower: -1, upper: 0 } });
  });
});

describe('loadDefinition: result and image', () => {
  it('accepts { op, output } as the result and checks the output exists', () => {
    const two = execOp({ mounts: [{ dest: '/', input: 0, output: 0 }, { dest: '/out', output: 1 }] });
    const def = loadDefinition({ version: 1, ops: { base: IMAGE, x: two }, result: { op: 'x', output: 1 } });
    assert.deepEqual(def.result, { op: 'x', output: 1 });
    assert.equal(only(def.ops.get('x')).outputCount, 2);
    assertProblem({ version: 1, ops: { base: IMAGE }, result: { op: 'base', output: 2 } }, 'result', 'has 1 output');
  });

  it('checks the image config fields', () => {
    const image = (config: unknown, base?: string): unknown => ({ ...(withOp(IMAGE) as object), image: base === undefined ? { config } : { base, config } });
    assertProblem(image({ env: ['NOEQUALS'] }), 'image.config.env[0]', 'must be NAME=VALUE');
    assertProblem(image({ exposedPorts: ['80/tcp', 'http', '70000'] }), 'image.config.exposedPorts[1]', 'PORT or PORT/PROTOCOL');
    assertProblem(image({ exposedPorts: ['70000'] }), 'image.config.exposedPorts[0]', 'got "70000"');
    assertProblem(image({ cmd: 'sh' }), 'image.config.cmd', 'expected an array');
    assertProblem(image({ entrypoint: ['sh'], user: 0 }), 'image.config.user', 'expected a string');
    assertProblem(image({ workingdir: '/' }), 'image.config.workingdir', 'did you mean "workingDir"?');
    assertProblem({ ...(withOp(IMAGE) as object), image: {} }, 'image.config', 'required field is missing');
  });

  it('requires image.base to name a docker-image or oci-layout source', () => {
    const json = (base: string): unknown => ({ ...(withOp({ inputs: ['base'], ...MERGE_ONE }) as object), image: { base, config: {} } });
    assertProblem(json('x'), 'image.base', 'op "x" is not a docker-image:// or oci-layout:// source');
    assertProblem(json('bsae'), 'image.base', 'no op named "bsae" (did you mean "base"?)');
    const def = loadDefinition(json('base'));
    assert.deepEqual(def.image, { base: 'base', config: {} });
  });
});

describe('loadDefinition: the ops it returns', () => {
  const graph = {
    version: 1,
    ops: {
      top: { inputs: ['left', 'right'], merge: { inputs: [0, 1] } },
      left: { inputs: ['root'], ...MERGE_ONE },
      right: { inputs: ['root'], ...MERGE_ONE },
      root: IMAGE,
      orphan: { inputs: ['root'], ...MERGE_ONE },
    },
    result: 'top',
  };

  it('returns only the ops the result reaches', () => {
    const def = loadDefinition(graph);
    assert.deepEqual([...def.ops.keys()].sort(), ['left', 'right', 'root', 'top']);
  });

  it('orders every op after its inputs', () => {
    const def = loadDefinition(graph);
    const position = new Map([...def.ops.keys()].map((name, i) => [name, i]));
    for (const op of def.ops.values()) {
      for (const input of op.inputs) assert.ok(only(position.get(input.op)) < only(position.get(op.name)), `${input.op} before ${op.name}`);
    }
    assert.equal([...def.ops.keys()].at(-1), 'top');
  });

  it('still validates the ops the result does not reach', () => {
    assertProblem({ ...graph, ops: { ...graph.ops, orphan: { inputs: ['root'], merge: { inputs: [3] } } } }, 'ops.orphan.merge.inputs[0]', 'out of range');
  });

  it('keeps the image base even when the result does not reach it', () => {
    const def = loadDefinition({ version: 1, ops: { base: IMAGE, other: IMAGE }, result: null, image: { base: 'base', config: {} } });
    assert.deepEqual([...def.ops.keys()], ['base']);
  });

  it('gives each op its name, output count and a digest', () => {
    const def = loadDefinition(graph);
    const top: Op = only(def.ops.get('top'));
    assert.equal(top.name, 'top');
    assert.equal(top.outputCount, 1);
    assert.match(top.digest, /^sha256:[0-9a-f]{64}$/);
    assert.equal(def.file, undefined);
    assert.equal(loadDefinition(graph, { file: 'g.json' }).file, 'g.json');
  });
});

describe('parseDefinition', () => {
  it('loads the full example fixture with every default filled in', async () => {
    const text = await readFile(new URL('full.json', FIXTURES), 'utf8');
    const def = parseDefinition(text, { file: 'full.json' });
    assert.deepEqual([...def.ops.keys()].sort(), ['base', 'changes', 'compile', 'context', 'layered', 'prepare', 'tool']);
    assert.deepEqual(def.result, { op: 'changes', output: 0 });
    assert.equal(def.file, 'full.json');
    assert.deepEqual(only(def.ops.get('base')).platform, { os: 'linux', architecture: 'arm64', variant: 'v8' });
    const compile = only(def.ops.get('compile'));
    assert.equal(compile.outputCount, 2);
    assert.deepEqual(compile.metadata, { description: {}, ignoreCache: true, progressGroup: { id: 'build', name: 'Build' } });
    assert.equal(only(def.ops.get('prepare')).outputCount, 1);
    assert.deepEqual(def.image?.config.exposedPorts, ['8080/tcp']);
  });

  it('reports a JSON syntax error with file, line and column', async () => {
    const text = await readFile(new URL('trailing-comma.json', FIXTURES), 'utf8');
    assert.throws(
      () => parseDefinition(text, { file: 'trailing-comma.json' }),
      (err: unknown) =>
        err instanceof ValidationError &&
        err.file === 'trailing-comma.json' &&
        err.diagnostics[0]?.message === 'invalid JSON at line 4, column 53: trailing comma before "}"',
    );
  });

  it('says what is wrong for the common syntax mistakes', () => {
    const messageOf = (text: string): string => {
      try {
        parseDefinition(text);
      } catch (err) {
        if (err instanceof ValidationError) return err.diagnostics[0]?.message ?? '';
      }
      return assert.fail('expected a ValidationError');
    };
    assert.equal(messageOf(''), 'invalid JSON at line 1, column 1: unexpected end of input');
    assert.equal(messageOf('{\n  "a": 1\n  "b": 2\n}'), 'invalid JSON at line 3, column 3: expected "," or "}" after a property value');
    assert.equal(messageOf("{'a': 1}"), 'invalid JSON at line 1, column 2: expected a property name in double quotes');
    assert.equal(messageOf('[1, // two\n2]'), 'invalid JSON at line 1, column 5: unexpected "/" (JSON has no comments)');
    assert.equal(messageOf('{"a": "x\ny"}'), 'invalid JSON at line 1, column 9: unescaped control character in a string (write \\n, \\t, ...)');
    assert.equal(messageOf('{"a": tru}'), 'invalid JSON at line 1, column 7: unexpected "t"');
    assert.equal(messageOf('{} {}'), 'invalid JSON at line 1, column 4: unexpected "{" after the end of the JSON value');
    assert.equal(messageOf('["\\q"]'), 'invalid JSON at line 1, column 3: invalid escape sequence in a string');
  });

  it('accepts a byte-order mark before the JSON', () => {
    assert.equal(parseDefinition('\uFEFF{"version": 1, "ops": {}, "result": null}').ops.size, 0);
  });
});
