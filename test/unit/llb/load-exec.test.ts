import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadDefinition } from '../../../src/llb/load.js';
import type { ExecOp } from '../../../src/llb/types.js';
import { assertProblem, execOp, IMAGE, problemsOf, withOp } from './problems.js';

const ROOT = { dest: '/', input: 0, output: 0 };
const META = 'ops.x.exec.meta';
const MOUNTS = 'ops.x.exec.mounts';
/** An exec op over `base` whose mounts are the root plus `extra`. */
const mounts = (...extra: unknown[]): unknown => withOp(execOp({ mounts: [ROOT, ...extra] }));
const meta = (fields: Record<string, unknown>): unknown => withOp(execOp({}, fields));

function loadExec(json: unknown): ExecOp {
  const body = loadDefinition(json).ops.get('x')?.body;
  assert.equal(body?.kind, 'exec');
  return body.exec;
}

describe('exec meta', () => {
  it('fills every default', () => {
    const exec = loadExec(withOp(execOp()));
    assert.deepEqual(exec.meta, {
      args: ['/bin/true'],
      env: [],
      cwd: '/',
      user: '',
      hostname: '',
      extraHosts: [],
      ulimit: [],
      cgroupParent: '',
      validExitCodes: [0],
    });
    assert.equal(exec.network, 'sandbox');
    assert.equal(exec.security, 'sandbox');
    assert.deepEqual(exec.secretEnv, []);
  });

  it('requires meta and non-empty args of strings', () => {
    assertProblem(withOp({ inputs: ['base'], exec: { mounts: [ROOT] } }), META, 'required field is missing');
    assertProblem(meta({ args: [] }), `${META}.args`, 'must not be empty');
    assertProblem(meta({ args: ['sh', 1] }), `${META}.args[1]`, 'expected a string');
    assertProblem(withOp(execOp({ meta: { env: [] } })), `${META}.args`, 'required field is missing');
  });

  it('requires env entries of the form NAME=VALUE', () => {
    assertProblem(meta({ env: ['A=1', 'B'] }), `${META}.env[1]`, 'must be NAME=VALUE, got "B"');
    assertProblem(meta({ env: ['=x'] }), `${META}.env[0]`, 'must be NAME=VALUE');
    assert.deepEqual(loadExec(meta({ env: ['A=', 'B=x=y'] })).meta.env, ['A=', 'B=x=y']);
  });

  it('requires an absolute cwd', () => {
    assertProblem(meta({ cwd: 'app' }), `${META}.cwd`, 'must be an absolute path, got "app"');
  });

  it('checks extra hosts', () => {
    assertProblem(meta({ extraHosts: [{ host: 'db', ip: '10.0.0.300' }] }), `${META}.extraHosts[0].ip`, 'is not an IPv4 or IPv6 address');
    assertProblem(meta({ extraHosts: [{ ip: '::1' }] }), `${META}.extraHosts[0].host`, 'required field is missing');
    const hosts = [
      { host: 'db', ip: '10.0.0.2' },
      { host: 'v6', ip: 'fe80::1' },
    ];
    assert.deepEqual(loadExec(meta({ extraHosts: hosts })).meta.extraHosts, hosts);
  });

  it('checks ulimits: known names, integers >= -1, soft <= hard', () => {
    assertProblem(meta({ ulimit: [{ name: 'nofiles', soft: 1, hard: 1 }] }), `${META}.ulimit[0].name`, 'did you mean "nofile"?');
    assertProblem(meta({ ulimit: [{ name: 'nofile', soft: 2048, hard: 1024 }] }), `${META}.ulimit[0].soft`, 'the soft limit (2048) is above the hard limit (1024)');
    assertProblem(meta({ ulimit: [{ name: 'core', soft: -1, hard: 0 }] }), `${META}.ulimit[0].soft`, 'the soft limit (unlimited) is above');
    assertProblem(meta({ ulimit: [{ name: 'core', soft: -2, hard: -1 }] }), `${META}.ulimit[0].soft`, 'must be >= -1');
    assertProblem(meta({ ulimit: [{ name: 'core', soft: 1 }] }), `${META}.ulimit[0].hard`, 'required field is missing');
    const ulimit = [
      { name: 'nofile', soft: 1024, hard: -1 },
      { name: 'stack', soft: -1, hard: -1 },
    ];
    assert.deepEqual(loadExec(meta({ ulimit })).meta.ulimit, ulimit);
  });

  it('checks valid exit codes', () => {
    assertProblem(meta({ validExitCodes: [] }), `${META}.validExitCodes`, 'must not be empty');
    assertProblem(meta({ validExitCodes: [0, 256] }), `${META}.validExitCodes[1]`, 'must be between 0 and 255');
    assertProblem(meta({ validExitCodes: [1.5] }), `${META}.validExitCodes[0]`, 'expected an integer');
    assert.deepEqual(loadExec(meta({ validExitCodes: [0, 3] })).meta.validExitCodes, [0, 3]);
  });

  it('checks network, security and secretEnv', () => {
    assertProblem(withOp(execOp({ network: 'bridge' })), 'ops.x.exec.network', 'must be "sandbox", "host" or "none", got string "bridge"');
    assertProblem(withOp(execOp({ security: 'privileged' })), 'ops.x.exec.security', 'must be "sandbox" or "insecure"');
    assertProblem(withOp(execOp({ secretEnv: [{ id: 't', name: '1TOKEN' }] })), 'ops.x.exec.secretEnv[0].name', '"1TOKEN" is not a valid environment variable name');
    assertProblem(withOp(execOp({ secretEnv: [{ name: 'TOKEN' }] })), 'ops.x.exec.secretEnv[0].id', 'required field is missing');
    const exec = loadExec(withOp(execOp({ network: 'host', security: 'insecure', secretEnv: [{ id: 't', name: 'TOKEN' }] })));
    assert.deepEqual([exec.network, exec.security, exec.secretEnv], ['host', 'insecure', [{ id: 't', name: 'TOKEN', optional: false }]]);
  });
});

describe('exec mounts', () => {
  it('fills the defaults of each mount type', () => {
    const exec = loadExec(
      mounts(
        { dest: '/data/' },
        { type: 'cache', dest: '/cache' },
        { type: 'tmpfs', dest: '/tmp' },
        { type: 'secret', dest: '/s', secret: { id: 'npmrc' } },
        { type: 'ssh', dest: '/ssh' },
      ),
    );
    assert.deepEqual(exec.mounts, [
      { type: 'bind', dest: '/', input: 0, selector: '', output: 0, readonly: false },
      { type: 'bind', dest: '/data', input: -1, selector: '', output: -1, readonly: false },
      { type: 'cache', dest: '/cache', input: -1, selector: '', readonly: false, cache: { id: '/cache', sharing: 'shared' } },
      { type: 'tmpfs', dest: '/tmp', readonly: false, tmpfs: { size: 0 } },
      { type: 'secret', dest: '/s', secret: { id: 'npmrc', uid: 0, gid: 0, mode: 0o400, optional: false } },
      { type: 'ssh', dest: '/ssh', ssh: { id: 'default', uid: 0, gid: 0, mode: 0o600, optional: false } },
    ]);
  });

  it('keeps the options given', () => {
    const exec = loadExec(
      mounts(
        { dest: '/sub', input: 0, selector: '/etc', readonly: true },
        { type: 'cache', dest: '/c', input: 0, cache: { id: 'go', sharing: 'locked' } },
        { type: 'tmpfs', dest: '/t', tmpfs: { size: 1024 } },
        { type: 'secret', dest: '/s', readonly: true, secret: { id: 'k', uid: 1, gid: 2, mode: '0440', optional: true } },
        { type: 'ssh', dest: '/ssh', ssh: { id: 'agent', mode: 0o644 } },
      ),
    );
    assert.deepEqual(exec.mounts.slice(1), [
      { type: 'bind', dest: '/sub', input: 0, selector: '/etc', output: -1, readonly: true },
      { type: 'cache', dest: '/c', input: 0, selector: '', readonly: false, cache: { id: 'go', sharing: 'locked' } },
      { type: 'tmpfs', dest: '/t', readonly: false, tmpfs: { size: 1024 } },
      { type: 'secret', dest: '/s', secret: { id: 'k', uid: 1, gid: 2, mode: 0o440, optional: true } },
      { type: 'ssh', dest: '/ssh', ssh: { id: 'agent', uid: 0, gid: 0, mode: 0o644, optional: false } },
    ]);
  });

  it('requires mounts, and an absolute dest in each', () => {
    assert.deepEqual(problemsOf(withOp({ inputs: ['base'], exec: { meta: { args: ['x'] } } })), [{ path: MOUNTS, message: 'required field is missing' }]);
    assertProblem(mounts({ dest: 'work' }), `${MOUNTS}[1].dest`, 'must be an absolute path, got "work"');
    assertProblem(mounts({ input: 0 }), `${MOUNTS}[1].dest`, 'required field is missing');
    assertProblem(mounts({ dest: '/w', typ: 'bind' }), `${MOUNTS}[1].typ`, 'did you mean "type"?');
    assertProblem(mounts({ dest: '/w', type: 'volume' }), `${MOUNTS}[1].type`, 'must be "bind", "cache", "tmpfs", "secret" or "ssh"');
  });

  it('requires unique destinations, compared after normalizing', () => {
    assertProblem(mounts({ dest: '/w' }, { dest: '/w/./' }), `${MOUNTS}[2].dest`, '"/w" is already mounted by mounts[1]');
  });

  it('requires exactly one bind mount at "/"', () => {
    assertProblem(withOp(execOp({ mounts: [{ dest: '/w', input: 0, output: 0 }] })), MOUNTS, 'no mount has dest "/"');
    assertProblem(mounts({ dest: '/' }), `${MOUNTS}[1].dest`, '"/" is already mounted by mounts[0]');
    assertProblem(withOp(execOp({ mounts: [{ type: 'tmpfs', dest: '/' }] })), `${MOUNTS}[0].type`, 'the "/" mount must be a bind mount, not tmpfs');
  });

  it('checks input indexes per mount type', () => {
    assertProblem(mounts({ dest: '/w', input: 1 }), `${MOUNTS}[1].input`, "1 is out of range: the op has 1 input; use -1 (scratch) or 0 (the op's inputs)");
    assertProblem(mounts({ dest: '/c', type: 'cache', input: 2 }), `${MOUNTS}[1].input`, 'out of range');
    assertProblem(mounts({ dest: '/t', type: 'tmpfs', input: 0 }), `${MOUNTS}[1].input`, 'a tmpfs mount takes no input');
    assertProblem(mounts({ dest: '/s', type: 'secret', input: 0, secret: { id: 's' } }), `${MOUNTS}[1].input`, 'a secret mount takes no input');
    assertProblem(mounts({ dest: '/s', type: 'ssh', input: 0 }), `${MOUNTS}[1].input`, 'an ssh mount takes no input');
  });

  it('allows a selector only on bind and cache mounts with an input', () => {
    assertProblem(mounts({ dest: '/w', selector: '/x' }), `${MOUNTS}[1].selector`, 'a selector needs a bind or cache mount with an input');
    assertProblem(mounts({ dest: '/t', type: 'tmpfs', selector: '/x' }), `${MOUNTS}[1].selector`, 'a selector needs');
  });

  it('allows outputs only on bind mounts, never on readonly ones', () => {
    assertProblem(mounts({ dest: '/c', type: 'cache', output: 1 }), `${MOUNTS}[1].output`, 'only bind mounts become outputs');
    assertProblem(mounts({ dest: '/w', readonly: true, output: 1 }), `${MOUNTS}[1].output`, 'a readonly mount cannot become an output');
    assertProblem(mounts({ dest: '/w', output: -2 }), `${MOUNTS}[1].output`, '-2 is out of range: outputs are numbered from 0');
  });

  it('allows each options object only on its own mount type', () => {
    assertProblem(mounts({ dest: '/w', cache: { id: 'x' } }), `${MOUNTS}[1].cache`, 'only allowed on a cache mount (this one is bind)');
    assertProblem(mounts({ dest: '/c', type: 'cache', tmpfs: {} }), `${MOUNTS}[1].tmpfs`, 'only allowed on a tmpfs mount');
    assertProblem(mounts({ dest: '/t', type: 'tmpfs', secret: { id: 'x' } }), `${MOUNTS}[1].secret`, 'only allowed on a secret mount');
    assertProblem(mounts({ dest: '/s', type: 'secret', secret: { id: 'x' }, ssh: {} }), `${MOUNTS}[1].ssh`, 'only allowed on an ssh mount');
  });

  it('checks the options objects', () => {
    assertProblem(mounts({ dest: '/c', type: 'cache', cache: { sharing: 'exclusive' } }), `${MOUNTS}[1].cache.sharing`, 'must be "shared", "private" or "locked"');
    assertProblem(mounts({ dest: '/t', type: 'tmpfs', tmpfs: { size: -1 } }), `${MOUNTS}[1].tmpfs.size`, 'must be >= 0');
    assertProblem(mounts({ dest: '/s', type: 'secret' }), `${MOUNTS}[1].secret`, 'required field is missing');
    assertProblem(mounts({ dest: '/s', type: 'secret', secret: { uid: 0 } }), `${MOUNTS}[1].secret.id`, 'required field is missing');
    assertProblem(mounts({ dest: '/s', type: 'secret', secret: { id: 'k', mode: '0999' } }), `${MOUNTS}[1].secret.mode`, 'expected an octal mode');
    assertProblem(mounts({ dest: '/s', type: 'ssh', ssh: { uid: -1 } }), `${MOUNTS}[1].ssh.uid`, 'user and group ids are 0..4294967294');
  });

  it('refuses to make a secret or ssh mount writable', () => {
    assertProblem(mounts({ dest: '/s', type: 'secret', readonly: false, secret: { id: 'k' } }), `${MOUNTS}[1].readonly`, 'secret mounts are always read-only');
    assertProblem(mounts({ dest: '/s', type: 'ssh', readonly: false }), `${MOUNTS}[1].readonly`, 'ssh mounts are always read-only');
  });

  it('requires outputs numbered 0..n-1 without gaps or duplicates', () => {
    assertProblem(mounts({ dest: '/a', output: 2 }, { dest: '/b' }), MOUNTS, 'outputs must be numbered 0..2 without gaps; missing output 1');
    assertProblem(mounts({ dest: '/a', output: 2 }), `${MOUNTS}[1].output`, 'the op has 2 mounts; use -1..1');
    assertProblem(mounts({ dest: '/a', output: 0 }), `${MOUNTS}[1].output`, 'output 0 is already used by mounts[0]');
    assert.equal(loadDefinition(mounts({ dest: '/a', output: 1 })).ops.get('x')?.outputCount, 2);
  });

  it('skips the rules across mounts while a mount is unreadable', () => {
    const problems = problemsOf(withOp(execOp({ mounts: [{ dest: 5, input: 0, output: 0 }] })));
    assert.deepEqual(
      problems.map((p) => p.path),
      [`${MOUNTS}[0].dest`],
    );
  });

  it('accepts an exec op with no outputs', () => {
    const json = withOp(IMAGE, { silent: { inputs: ['base'], exec: { meta: { args: ['true'] }, mounts: [{ dest: '/', input: 0 }] } } });
    assert.doesNotThrow(() => loadDefinition(json));
  });
});
