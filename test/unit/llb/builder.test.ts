import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ValidationError } from '../../../src/errors.js';
import { copy, DefinitionBuilder, mkdir, mkfile, rm, scratch, symlink } from '../../../src/llb/builder.js';
import { loadDefinition } from '../../../src/llb/load.js';
import type { Definition, Op } from '../../../src/llb/types.js';

function opOf(def: Definition, name: string): Op {
  const op = def.ops.get(name);
  assert.ok(op !== undefined, name);
  return op;
}

describe('DefinitionBuilder', () => {
  it('builds the JSON a person would write', () => {
    const b = new DefinitionBuilder();
    const ctx = b.local('ctx', { name: 'context', excludePatterns: ['*.tmp'] });
    const app = b.file('app', [mkdir('/app', { mode: 0o755, makeParents: true }), copy(ctx, '/src', '/app')], { input: scratch() });
    assert.deepEqual(b.build(app), {
      version: 1,
      ops: {
        ctx: { source: { identifier: 'local://context', attrs: { 'local.excludepatterns': '["*.tmp"]' } } },
        app: {
          inputs: ['ctx'],
          file: {
            actions: [
              { input: -1, output: -1, mkdir: { path: '/app', mode: 0o755, makeParents: true } },
              { input: 1, output: 0, secondaryInput: 0, copy: { src: '/src', dest: '/app' } },
            ],
          },
        },
      },
      result: 'app',
    });
  });

  it('round-trips a graph of every op kind through the loader', () => {
    const b = new DefinitionBuilder();
    const base = b.image('base', 'alpine:3.20', { resolveMode: 'pull', platform: { os: 'linux', architecture: 'arm64' } });
    const ctx = b.local('context', { includePatterns: ['src/**'], followPaths: ['src'], sharedKeyHint: 'k' });
    const tool = b.http('tool', 'https://example.com/tool', { perm: 0o755, uid: 1, gid: 2, filename: 't', checksum: `sha256:${'a'.repeat(64)}` });
    const repo = b.git('repo', 'https://example.com/r.git#main', { keepGitDir: true });
    const files = b.file(
      'files',
      [
        mkfile('/bin.dat', new Uint8Array([0, 255])),
        mkfile('/hello', 'hi', { mode: '0600', timestamp: '7' }),
        symlink('hello', '/link'),
        rm('/link', { allowNotFound: true }),
        copy(ctx, '/src', '/app', { mode: 'u+x', owner: { user: 'app' } }),
        copy(tool, '/tool', '/usr/bin/tool'),
        copy(repo, '/', '/repo'),
      ],
      { input: base, customName: 'prepare files' },
    );
    const build = b.exec('build', {
      args: ['/bin/sh', '-c', 'make'],
      env: ['CI=1'],
      cwd: '/app',
      mounts: [
        { dest: '/', input: files },
        { dest: '/src', input: ctx, readonly: true },
        { dest: '/cache', type: 'cache', cache: { id: 'go', sharing: 'locked' } },
        { dest: '/out' },
        { dest: '/scratch', output: false },
        { dest: '/run/secrets/t', type: 'secret', secret: { id: 't' } },
      ],
      network: 'none',
      secretEnv: [{ id: 't', name: 'TOKEN' }],
      ignoreCache: true,
      constraints: ['executor==runc'],
    });
    const layered = b.merge('layered', [base, build.output('/out')]);
    const changes = b.diff('changes', base, layered);
    const def = loadDefinition(b.build(changes, { base, config: { cmd: ['/app/run'] } }));

    assert.deepEqual([...def.ops.keys()].sort(), ['base', 'build', 'changes', 'context', 'files', 'layered', 'repo', 'tool']);
    assert.deepEqual(opOf(def, 'base').platform, { os: 'linux', architecture: 'arm64', variant: '' });
    assert.deepEqual(opOf(def, 'tool').body, {
      kind: 'source',
      source: {
        identifier: 'https://example.com/tool',
        attrs: { 'http.checksum': `sha256:${'a'.repeat(64)}`, 'http.filename': 't', 'http.perm': '0755', 'http.uid': '1', 'http.gid': '2' },
      },
    });
    assert.deepEqual(opOf(def, 'repo').body, { kind: 'source', source: { identifier: 'git+https://example.com/r.git#main', attrs: { 'git.keepgitdir': 'true' } } });

    const filesOp = opOf(def, 'files');
    assert.deepEqual(
      filesOp.inputs.map((i) => i.op),
      ['base', 'context', 'tool', 'repo'],
    );
    assert.equal(filesOp.metadata.description['llb.customname'], 'prepare files');
    assert.ok(filesOp.body.kind === 'file');
    assert.deepEqual(
      filesOp.body.file.actions.map((a) => [a.kind, a.input, a.secondaryInput, a.output]),
      [
        ['mkfile', 0, -1, -1],
        ['mkfile', 4, -1, -1],
        ['symlink', 5, -1, -1],
        ['rm', 6, -1, -1],
        ['copy', 7, 1, -1],
        ['copy', 8, 2, -1],
        ['copy', 9, 3, 0],
      ],
    );
    const first = filesOp.body.file.actions[0];
    assert.deepEqual(first?.kind === 'mkfile' && first.mkfile.data, new Uint8Array([0, 255]));

    const buildOp = opOf(def, 'build');
    assert.equal(buildOp.outputCount, 2);
    assert.equal(buildOp.metadata.ignoreCache, true);
    assert.deepEqual(buildOp.constraints, ['executor==runc']);
    assert.ok(buildOp.body.kind === 'exec');
    assert.deepEqual(
      buildOp.body.exec.mounts.map((m) => [m.dest, m.type === 'bind' || m.type === 'cache' ? m.input : -1, m.type === 'bind' ? m.output : -1]),
      [
        ['/', 0, 0],
        ['/src', 1, -1],
        ['/cache', -1, -1],
        ['/out', -1, 1],
        ['/scratch', -1, -1],
        ['/run/secrets/t', -1, -1],
      ],
    );
    assert.deepEqual(opOf(def, 'layered').inputs, [
      { op: 'base', output: 0 },
      { op: 'build', output: 1 },
    ]);
    assert.deepEqual(opOf(def, 'changes').body, { kind: 'diff', diff: { lower: 0, upper: 1 } });
    assert.deepEqual(def.image, { base: 'base', config: { cmd: ['/app/run'] } });
  });

  it('gives the same digests as the equivalent hand-written file', () => {
    const b = new DefinitionBuilder();
    const base = b.image('img', 'alpine:3.20');
    const out = b.exec('run', { args: ['make'], mounts: [{ dest: '/', input: base }] });
    const built = loadDefinition(b.build(out.output()));
    const written = loadDefinition({
      version: 1,
      ops: {
        a: { source: { identifier: 'docker-image://alpine:3.20' } },
        b: { inputs: [{ op: 'a', output: 0 }], exec: { meta: { args: ['make'], cwd: '/' }, mounts: [{ dest: '/', input: 0, output: 0, type: 'bind' }] } },
      },
      result: 'b',
    });
    assert.deepEqual(
      [...built.ops.values()].map((op) => op.digest),
      [...written.ops.values()].map((op) => op.digest),
    );
  });

  it('lists each distinct input once', () => {
    const b = new DefinitionBuilder();
    const base = b.image('base', 'alpine');
    const merged = b.merge('m', [base, base]);
    assert.deepEqual(b.build(merged).ops['m'], { inputs: ['base'], merge: { inputs: [0, 0] } });
  });

  it('refuses a second op with the same name', () => {
    const b = new DefinitionBuilder();
    b.image('base', 'alpine');
    assert.throws(() => b.local('base'), (err: unknown) => err instanceof ValidationError && err.diagnostics[0]?.path === 'ops.base');
  });

  it('refuses an exec output for a mount that has none', () => {
    const b = new DefinitionBuilder();
    const run = b.exec('run', { args: ['true'], mounts: [{ dest: '/' }, { dest: '/ro', readonly: true }] });
    assert.deepEqual(run.output(), { op: 'run', output: 0 });
    assert.throws(() => run.output('/ro'), /no mount at "\/ro" becomes an output/);
  });

  it('builds a scratch result and a result on another output', () => {
    const b = new DefinitionBuilder();
    assert.equal(b.build(null).result, null);
    const run = b.exec('run', { args: ['true'], mounts: [{ dest: '/' }, { dest: '/out' }] });
    assert.deepEqual(b.build(run.output('/out')).result, { op: 'run', output: 1 });
  });

  it('leaves validation to the loader', () => {
    const b = new DefinitionBuilder();
    const bad = b.file('bad', []);
    assert.throws(() => loadDefinition(b.build(bad)), (err: unknown) => err instanceof ValidationError && err.diagnostics[0]?.path === 'ops.bad.file.actions');
  });
});
