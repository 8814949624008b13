import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadDefinition, parseDefinition } from '../../../src/llb/load.js';
import { ValidationError } from '../../../src/errors.js';
import type { FileAction } from '../../../src/llb/types.js';
import { assertProblem, fileOp, withOp } from './problems.js';

const ACTIONS = 'ops.x.file.actions';
/** A definition whose op `x` is a file op over `base` with the given actions. */
const file = (...actions: unknown[]): unknown => withOp(fileOp(...actions));
/** One action on input 0 that becomes output 0. */
const one = (body: Record<string, unknown>): unknown => file({ input: 0, output: 0, ...body });

function loadActions(json: unknown): readonly FileAction[] {
  const body = loadDefinition(json).ops.get('x')?.body;
  assert.equal(body?.kind, 'file');
  return body.file.actions;
}

describe('file actions', () => {
  it('fills the defaults of each action', () => {
    const actions = loadActions(
      file(
        { input: 0, mkdir: { path: '/a' } },
        { input: 1, mkfile: { path: '/a/f' } },
        { input: 2, rm: { path: '/tmp' } },
        { input: 3, symlink: { oldpath: 'f', newpath: '/a/l' } },
        { input: 4, secondaryInput: 0, output: 0, copy: { src: '/etc', dest: '/b' } },
      ),
    );
    assert.deepEqual(actions, [
      { kind: 'mkdir', input: 0, secondaryInput: -1, output: -1, mkdir: { path: '/a', mode: 0o755, makeParents: false } },
      { kind: 'mkfile', input: 1, secondaryInput: -1, output: -1, mkfile: { path: '/a/f', mode: 0o644, data: new Uint8Array() } },
      { kind: 'rm', input: 2, secondaryInput: -1, output: -1, rm: { path: '/tmp', allowNotFound: false, allowWildcard: false } },
      { kind: 'symlink', input: 3, secondaryInput: -1, output: -1, symlink: { oldpath: 'f', newpath: '/a/l' } },
      {
        kind: 'copy',
        input: 4,
        secondaryInput: 0,
        output: 0,
        copy: {
          src: '/etc',
          dest: '/b',
          followSymlink: false,
          dirCopyContents: false,
          createDestPath: false,
          allowWildcard: false,
          allowEmptyWildcard: false,
          includePatterns: [],
          excludePatterns: [],
          alwaysReplaceExistingDestPaths: false,
        },
      },
    ]);
  });

  it('requires a non-empty list of actions', () => {
    assertProblem(withOp({ inputs: ['base'], file: {} }), ACTIONS, 'required field is missing');
    assertProblem(file(), ACTIONS, 'must not be empty');
  });

  it('requires exactly one kind per action', () => {
    assertProblem(file({ input: 0, output: 0 }), `${ACTIONS}[0]`, 'an action needs one of mkdir, mkfile, rm, symlink or copy');
    assertProblem(file({ input: 0, output: 0, rm: { path: '/a' }, mkdir: { path: '/a' } }), `${ACTIONS}[0]`, 'has both mkdir and rm; an action does exactly one of');
    assertProblem(file({ input: 0, output: 0, mkdri: { path: '/a' } }), `${ACTIONS}[0].mkdri`, 'did you mean "mkdir"?');
  });

  it('lets an action use only the op inputs and earlier actions', () => {
    assertProblem(one({ input: 1, mkdir: { path: '/a' } }), `${ACTIONS}[0].input`, "1 is out of range: the op has 1 input; use -1 (scratch) or 0 (the op's inputs)");
    assertProblem(
      file({ input: 0, mkdir: { path: '/a' } }, { input: 2, output: 0, mkdir: { path: '/b' } }),
      `${ACTIONS}[1].input`,
      "use -1 (scratch), 0 (the op's inputs) or 1 (earlier actions)",
    );
    assertProblem(file({ mkdir: { path: '/a' }, output: 0 }), `${ACTIONS}[0].input`, 'required field is missing');
    const actions = loadActions(file({ input: -1, mkdir: { path: '/a' } }, { input: 1, output: 0, mkdir: { path: '/a/b' } }));
    assert.deepEqual(
      actions.map((a) => a.input),
      [-1, 1],
    );
  });

  it('takes a secondaryInput for copy only, and requires it there', () => {
    assertProblem(one({ secondaryInput: 0, mkdir: { path: '/a' } }), `${ACTIONS}[0].secondaryInput`, 'only copy actions take a secondaryInput');
    assertProblem(one({ copy: { src: '/a', dest: '/b' } }), `${ACTIONS}[0].secondaryInput`, 'required field is missing');
    assertProblem(one({ secondaryInput: 1, copy: { src: '/a', dest: '/b' } }), `${ACTIONS}[0].secondaryInput`, 'out of range');
    assert.equal(loadActions(one({ secondaryInput: -1, mkdir: { path: '/a' } }))[0]?.secondaryInput, -1);
  });

  it('requires outputs numbered 0..n-1 without gaps or duplicates', () => {
    assertProblem(
      file({ input: 0, output: 1, mkdir: { path: '/a' } }, { input: 1, output: -1, mkdir: { path: '/b' } }),
      ACTIONS,
      'outputs must be numbered 0..1 without gaps; missing output 0',
    );
    assertProblem(one({ output: 1, mkdir: { path: '/a' } }), `${ACTIONS}[0].output`, 'the op has 1 action; use -1..0');
    assertProblem(
      file({ input: 0, output: 0, mkdir: { path: '/a' } }, { input: 1, output: 0, mkdir: { path: '/b' } }),
      `${ACTIONS}[1].output`,
      'output 0 is already used by actions[0]',
    );
    const two = file({ input: 0, output: 1, mkdir: { path: '/a' } }, { input: 1, output: 0, mkdir: { path: '/b' } });
    assert.equal(loadDefinition(two).ops.get('x')?.outputCount, 2);
  });

  it('requires non-empty paths', () => {
    assertProblem(one({ mkdir: { path: '' } }), `${ACTIONS}[0].mkdir.path`, 'must not be empty');
    assertProblem(one({ rm: {} }), `${ACTIONS}[0].rm.path`, 'required field is missing');
    assertProblem(one({ symlink: { oldpath: '', newpath: '/l' } }), `${ACTIONS}[0].symlink.oldpath`, 'must not be empty');
    assertProblem(one({ secondaryInput: 0, copy: { src: '/a' } }), `${ACTIONS}[0].copy.dest`, 'required field is missing');
  });

  it('reads modes as numbers or octal strings within 0..0o7777', () => {
    const modeOf = (mode: unknown): unknown => {
      const action = loadActions(one({ mkdir: { path: '/a', mode } }))[0];
      return action?.kind === 'mkdir' ? action.mkdir.mode : undefined;
    };
    assert.equal(modeOf('0755'), 0o755);
    assert.equal(modeOf('755'), 0o755);
    assert.equal(modeOf('04755'), 0o4755);
    assert.equal(modeOf(420), 0o644);
    assertProblem(one({ mkdir: { path: '/a', mode: '0789' } }), `${ACTIONS}[0].mkdir.mode`, 'expected an octal mode such as "0755"');
    assertProblem(one({ mkdir: { path: '/a', mode: 0o10000 } }), `${ACTIONS}[0].mkdir.mode`, 'a mode is between 0 and 0o7777');
    assertProblem(one({ mkfile: { path: '/a', mode: true } }), `${ACTIONS}[0].mkfile.mode`, 'expected a mode');
  });

  it('reads a copy mode as bits or as a chmod expression', () => {
    const modeOf = (mode: unknown): unknown => {
      const action = loadActions(one({ secondaryInput: 0, copy: { src: '/a', dest: '/b', mode } }))[0];
      return action?.kind === 'copy' ? action.copy.mode : undefined;
    };
    assert.deepEqual(modeOf('0755'), { kind: 'bits', bits: 0o755 });
    assert.deepEqual(modeOf(0o600), { kind: 'bits', bits: 0o600 });
    for (const expr of ['u+x,go-w', 'a=r', '+x', 'g=u', 'u=rwX,o=', 'ug+s,+t']) assert.deepEqual(modeOf(expr), { kind: 'chmod', expr });
    for (const bad of ['u+y', 'x+u', 'u+x,', 'rwx', '']) {
      assertProblem(one({ secondaryInput: 0, copy: { src: '/a', dest: '/b', mode: bad } }), `${ACTIONS}[0].copy.mode`, 'or a chmod expression such as "u+x,go-w"');
    }
  });

  it('decodes mkfile contents from data or dataBase64, not both', () => {
    const dataOf = (body: Record<string, unknown>): Uint8Array | undefined => {
      const action = loadActions(one({ mkfile: { path: '/f', ...body } }))[0];
      return action?.kind === 'mkfile' ? action.mkfile.data : undefined;
    };
    assert.deepEqual(dataOf({ data: 'héllo\n' }), new TextEncoder().encode('héllo\n'));
    assert.deepEqual(dataOf({ dataBase64: 'AAEC/w==' }), new Uint8Array([0, 1, 2, 255]));
    assertProblem(one({ mkfile: { path: '/f', data: 'a', dataBase64: 'YQ==' } }), `${ACTIONS}[0].mkfile`, 'give data or dataBase64, not both');
    assertProblem(one({ mkfile: { path: '/f', dataBase64: 'YQ=' } }), `${ACTIONS}[0].mkfile.dataBase64`, 'is not valid base64');
  });

  it('reads timestamps as integers or decimal strings of nanoseconds', () => {
    const timestampOf = (timestamp: unknown): bigint | undefined => {
      const action = loadActions(one({ symlink: { oldpath: 'a', newpath: '/b', timestamp } }))[0];
      return action?.kind === 'symlink' ? action.symlink.timestamp : undefined;
    };
    assert.equal(timestampOf(1234), 1234n);
    assert.equal(timestampOf('1700000000123456789'), 1700000000123456789n);
    const at = `${ACTIONS}[0].mkdir.timestamp`;
    assertProblem(one({ mkdir: { path: '/a', timestamp: 1700000000123456789 } }), at, 'write it as a decimal string');
    assertProblem(one({ mkdir: { path: '/a', timestamp: -1 } }), at, 'a non-negative integer or a decimal string');
    assertProblem(one({ mkdir: { path: '/a', timestamp: '9223372036854775808' } }), at, 'a non-negative integer or a decimal string');
    assertProblem(one({ mkdir: { path: '/a', timestamp: '1.5' } }), at, 'a non-negative integer or a decimal string');
  });

  it('reads a timestamp written as a JSON number beyond 2^53 exactly as the text wrote it', () => {
    // Every nanosecond time after early 1970 is beyond 2^53, which JSON.parse rounds to a double.
    const timestampOf = (literal: string): bigint | undefined => {
      const text = `{"version":1,"ops":{"x":{"file":{"actions":[{"input":-1,"output":0,"mkdir":{"path":"/a","timestamp":${literal}}}]}}},"result":"x"}`;
      const body = parseDefinition(text).ops.get('x')?.body;
      const action = body?.kind === 'file' ? body.file.actions[0] : undefined;
      return action?.kind === 'mkdir' ? action.mkdir.timestamp : undefined;
    };
    assert.equal(timestampOf('1700000000000000000'), 1700000000000000000n);
    assert.equal(timestampOf('1700000000123456789'), 1700000000123456789n, 'not the double 1700000000123456768');
    assert.equal(timestampOf('1.7e18'), 1700000000000000000n);
    assert.equal(timestampOf('9223372036854775807'), 9223372036854775807n);
    const problem = (literal: string): string => {
      try {
        timestampOf(literal);
      } catch (err) {
        if (err instanceof ValidationError) return err.message;
        throw err;
      }
      return '';
    };
    assert.match(problem('9223372036854775808'), /ops\.x\.file\.actions\[0\]\.mkdir\.timestamp: must be at most 9223372036854775807/);
    assert.match(problem('17000000000000000.5'), /mkdir\.timestamp: expected unix time in nanoseconds/);
  });

  it('reads owners as ids or names', () => {
    const ownerOf = (owner: unknown): unknown => {
      const action = loadActions(one({ mkdir: { path: '/a', owner } }))[0];
      return action?.kind === 'mkdir' ? action.mkdir.owner : undefined;
    };
    assert.deepEqual(ownerOf({ user: 1000, group: 'staff' }), { user: 1000, group: 'staff' });
    assert.deepEqual(ownerOf({ user: 'app' }), { user: 'app' });
    const at = `${ACTIONS}[0].mkdir.owner`;
    assertProblem(one({ mkdir: { path: '/a', owner: { user: -1 } } }), `${at}.user`, 'user and group ids are 0..4294967294');
    assertProblem(one({ mkdir: { path: '/a', owner: { group: '' } } }), `${at}.group`, 'must not be empty');
    assertProblem(one({ mkdir: { path: '/a', owner: { user: true } } }), `${at}.user`, 'expected a numeric id or a name');
    assertProblem(one({ mkdir: { path: '/a', owner: { uid: 0 } } }), `${at}.uid`, 'unknown field "uid"');
  });

  it('keeps every copy option given', () => {
    const options = {
      src: '/src/*.go',
      dest: '/app/',
      owner: { user: 1, group: 2 },
      followSymlink: true,
      dirCopyContents: true,
      createDestPath: true,
      allowWildcard: true,
      allowEmptyWildcard: true,
      includePatterns: ['a'],
      excludePatterns: ['b'],
      alwaysReplaceExistingDestPaths: true,
    };
    const action = loadActions(one({ secondaryInput: 0, copy: { ...options, timestamp: '5' } }))[0];
    assert.deepEqual(action?.kind === 'copy' ? action.copy : undefined, { ...options, timestamp: 5n });
    assertProblem(one({ secondaryInput: 0, copy: { src: '/a', dest: '/b', followSymlinks: true } }), `${ACTIONS}[0].copy.followSymlinks`, 'did you mean "followSymlink"?');
  });
});
