import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { loadDefinition } from '../../../src/llb/load.js';
import { maskUrlCredentials, opDisplayName } from '../../../src/llb/op-name.js';
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

describe('maskUrlCredentials', () => {
  /** The definition of the masking as a regular expression (quadratic on long runs of letters, so only for short texts). */
  const byRegex = (text: string): string =>
    text.replaceAll(/([A-Za-z][A-Za-z0-9+.-]*:\/\/)([^/?#@\s]*)@/g, (whole, scheme: string, info: string) =>
      info.includes(':') || /^(git\+)?https?:\/\/$/i.test(scheme) ? `${scheme}***@` : whole,
    );

  it('masks what the regular expression masks, for any text of URL-ish characters', () => {
    const piece = fc.constantFrom('://', '@', ':', '/', '?', '#', ' ', '\n', 'http', 'https', 'git+', 'ssh', 'user', 'pw', 'x', '1', '.', '-', '+', 'H');
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 40 }).map((parts) => parts.join('')), (text) => {
        assert.equal(maskUrlCredentials(text), byRegex(text));
      }),
      { numRuns: 3000 },
    );
  });

  it('masks passwords, and a user alone over http(s) only', () => {
    assert.equal(maskUrlCredentials('see https://me:pw@h/x and ssh://git@h/r and http://tok@h/'), 'see https://***@h/x and ssh://git@h/r and http://***@h/');
    assert.equal(maskUrlCredentials('git+https://u:p@h/a.git#main, git://h/p'), 'git+https://***@h/a.git#main, git://h/p');
  });

  it('reads a long identifier once, not once per position', () => {
    // 200,000 letters and no "SCHEME://": the regular expression took ~20 s on this.
    const long = 'x'.repeat(200_000);
    assert.equal(maskUrlCredentials(long), long);
    assert.equal(maskUrlCredentials(`${long}://u:p@${long}`), `${long}://***@${long}`);
  });
});
