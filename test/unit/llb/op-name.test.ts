import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadDefinition } from '../../../src/llb/load.js';
import { opDisplayName } from '../../../src/llb/op-name.js';
import { execOp, fileOp, IMAGE, withOp } from './problems.js';

/** The display name of op `x` in a definition built around it. */
const nameOf = (op: unknown): string => {
  const loaded = loadDefinition(withOp(op)).ops.get('x');
  assert.ok(loaded !== undefined);
  return opDisplayName(loaded);
};

describe('opDisplayName', () => {
  it('prefers llb.customname', () => {
    assert.equal(nameOf({ ...IMAGE, metadata: { description: { 'llb.customname': 'fetch alpine' } } }), 'fetch alpine');
    assert.equal(nameOf({ ...IMAGE, metadata: { description: { 'llb.customname': '' } } }), 'docker-image://alpine:3.20');
  });

  it('names a source by its identifier', () => {
    assert.equal(nameOf({ source: { identifier: 'local://ctx' } }), 'local://ctx');
  });

  it('names an exec by its command line, cut at 80 characters', () => {
    assert.equal(nameOf(execOp({}, { args: ['/bin/sh', '-c', 'make all'] })), '/bin/sh -c make all');
    const long = nameOf(execOp({}, { args: ['echo', 'x'.repeat(200)] }));
    assert.equal(long.length, 80);
    assert.ok(long.startsWith('echo xxx') && long.endsWith('...'));
  });

  it('summarises file actions', () => {
    const op = fileOp(
      { input: 0, mkdir: { path: '/app' } },
      { input: 1, mkfile: { path: '/app/x' } },
      { input: 2, rm: { path: '/tmp' } },
      { input: 3, symlink: { oldpath: 'a', newpath: '/b' } },
      { input: 4, secondaryInput: 0, output: 0, copy: { src: '/src', dest: '/dest' } },
    );
    assert.equal(nameOf(op), 'mkdir /app; mkfile /app/x; rm /tmp; symlink a -> /b; copy /src -> /dest');
  });

  it('names merge and diff ops by their kind', () => {
    assert.equal(nameOf({ inputs: ['base'], merge: { inputs: [0] } }), 'merge');
    assert.equal(nameOf({ inputs: ['base'], diff: { lower: -1, upper: 0 } }), 'diff');
  });
});
