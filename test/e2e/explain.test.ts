/**
 * "Why did this rerun?" end to end on the runc worker: one root, builds of
 * one definition changed one thing at a time; each rerun vertex's reason
 * (rawjson `reason`, the plain line under the vertex, the --explain report)
 * names exactly what changed, cached vertices carry none, and a secret's
 * value and a URL's password are in no output and no file of the root.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, readFile, lstat, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { type KilnRun, kiln } from './harness.js';
import { busyboxOps, workerSuite } from './workers.js';

interface Variant {
  readonly script?: string;
  readonly env?: readonly string[];
  readonly prep?: string;
}

interface RawReason {
  readonly kind: string;
  readonly by?: string;
  readonly fields?: readonly { path: string; old?: string; new?: string }[];
  readonly inputs?: readonly string[];
  readonly files?: { changes: { path: string; change: string }[]; total?: number };
}

interface RawVertexEvent {
  readonly type: string;
  readonly digest: string;
  readonly name: string;
  readonly cached: boolean;
  readonly completed?: string;
  readonly reason?: RawReason;
}

describe('why did this rerun (runc)', () => {
  const suite = workerSuite('runc', 'explain');
  const secret = randomBytes(16).toString('hex');
  const password = randomBytes(12).toString('hex');
  const printed: KilnRun[] = [];
  let ctx: string;
  let secretFile: string;
  let n = 0;

  before(async () => {
    ctx = join(suite.work, 'ctx');
    await mkdir(ctx);
    await writeFile(join(ctx, 'a.txt'), 'one\n');
    await writeFile(join(ctx, 'b.txt'), 'two\n');
    secretFile = join(suite.work, 'secret');
    await writeFile(secretFile, secret);
  });

  /** The definition: busybox base, a local context, a `prep` step, and `step` reading all three with a secret. */
  const definition = async (v: Variant): Promise<string> => {
    const ops = {
      ...(await busyboxOps()),
      ctx: { source: { identifier: 'local://ctx' }, metadata: { description: { 'llb.customname': 'context' } } },
      prep: {
        inputs: ['base'],
        exec: {
          meta: { args: ['/bin/sh', '-c', v.prep ?? 'echo p1 > /out/p'] },
          mounts: [{ dest: '/', input: 0, output: -1, readonly: true }, { dest: '/out', input: -1, output: 0 }],
        },
      },
      step: {
        inputs: ['base', 'ctx', 'prep'],
        exec: {
          meta: { args: ['/bin/sh', '-c', v.script ?? 'cat /ctx/a.txt /prep/p > /out/r; test -n "$TOKEN"'], env: v.env ?? ['MODE=fast'] },
          secretEnv: [{ id: 'tok', name: 'TOKEN' }],
          mounts: [
            { dest: '/', input: 0, output: -1, readonly: true },
            { dest: '/ctx', input: 1, output: -1, readonly: true },
            { dest: '/prep', input: 2, output: -1, readonly: true },
            { dest: '/out', input: -1, output: 0 },
            { type: 'secret', dest: '/run/secrets/tok', secret: { id: 'tok' } },
          ],
        },
      },
    };
    const file = join(suite.work, `def${n++}.json`);
    await writeFile(file, JSON.stringify({ version: 1, ops, result: 'step' }));
    return file;
  };

  const build = async (v: Variant, args: readonly string[] = ['--progress', 'rawjson']): Promise<KilnRun> => {
    const file = await definition(v);
    const run = await kiln(['build', file, '--root', suite.root, '--local', 'tools=/bin', '--local', `ctx=${ctx}`, '--secret', 'id=tok,src=' + secretFile, '--explain', ...args]);
    printed.push(run);
    assert.equal(run.exitCode, 0, run.stderr);
    return run;
  };

  const events = (run: KilnRun): RawVertexEvent[] =>
    run.stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as RawVertexEvent)
      .filter((e) => e.type === 'vertex');

  /** The reason of each vertex that reran, by name; asserts no cached vertex carries one. */
  const reasons = (run: KilnRun): Map<string, RawReason> => {
    const out = new Map<string, RawReason>();
    const cached = new Set<string>();
    for (const e of events(run)) {
      if (e.cached) {
        assert.equal(e.reason, undefined, `cached vertex ${e.name} has a reason`);
        cached.add(e.name);
      }
      if (e.reason !== undefined) out.set(e.name, e.reason);
    }
    for (const name of cached) assert.ok(!out.has(name), `${name} came from the cache but had a reason`);
    return out;
  };

  test('the first build: every vertex says there is no earlier build; the same build again is all cached, with no reason', async () => {
    const first = reasons(await build({}));
    assert.equal(first.size, 6, [...first.keys()].join(', '));
    for (const [name, reason] of first) assert.deepEqual(reason, { kind: 'first-build' }, name);
    const again = await build({});
    assert.equal(reasons(again).size, 0);
    assert.ok(events(again).some((e) => e.cached));
    assert.match(again.stderr, /Why steps reran: nothing reran/);
  });

  test('one arg changed: the reason names meta.args[2] with old and new, in rawjson, the plain line and --explain', async () => {
    const run = await build({ script: 'cat /ctx/a.txt /prep/p > /out/r; echo 2 >> /out/r; test -n "$TOKEN"' });
    const all = reasons(run);
    assert.deepEqual([...all.keys()], ['/bin/sh -c cat /ctx/a.txt /prep/p > /out/r; echo 2 >> /out/r; test -n "$TOKEN"']);
    const reason = [...all.values()][0];
    assert.equal(reason?.kind, 'changed');
    assert.deepEqual(reason?.fields, [{ path: 'meta.args[2]', old: '"cat /ctx/a.txt /prep/p > /out/r; test -n \\"$TOKEN\\""', new: '"cat /ctx/a.txt /prep/p > /out/r; echo 2 >> /out/r; test -..."' }]);
    assert.deepEqual(reason?.inputs, []);
    // Plain: one line under the vertex; the report at the end.
    const plain = await build({ script: 'echo 3 > /out/r' }, ['--progress', 'plain']);
    assert.match(plain.stderr, /^#\d+ rerun: meta\.args\[2\] changed "cat \/ctx\/a\.txt .*" → "echo 3 > \/out\/r"$/m);
    assert.match(plain.stderr, /^Why steps reran \(1\):\n {2}\[\/bin\/sh -c echo 3 > \/out\/r\] meta\.args\[2\] changed/m);
  });

  test('one env changed: the reason names meta.env[0]; a URL password in it is masked', async () => {
    await build({});
    const reason = [...reasons(await build({ env: ['MODE=slow'] })).values()];
    assert.deepEqual(reason.map((r) => r.fields), [[{ path: 'meta.env[0]', old: '"MODE=fast"', new: '"MODE=slow"' }]]);
    const withUrl = [...reasons(await build({ env: ['MODE=slow', `MIRROR=https://ci:${password}@mirror.invalid/x`] })).values()];
    assert.deepEqual(withUrl.map((r) => r.fields), [[{ path: 'meta.env[1]', new: '"MIRROR=https://***@mirror.invalid/x"' }]]);
  });

  test('one local file changed: the local source names it, the step names its input', async () => {
    await build({});
    await writeFile(join(ctx, 'a.txt'), 'one, changed\n');
    await writeFile(join(ctx, 'c.txt'), 'new\n');
    const all = reasons(await build({}));
    assert.deepEqual(all.get('context'), {
      kind: 'changed',
      fields: [],
      inputs: [],
      files: { changes: [{ path: 'a.txt', change: 'modified' }, { path: 'c.txt', change: 'added' }], total: 2 },
    });
    const step = [...all].find(([name]) => name.startsWith('/bin/sh -c cat'))?.[1];
    assert.deepEqual(step, { kind: 'changed', fields: [], inputs: ['ctx'] });
  });

  test('an input op changed: its dependent names it', async () => {
    const all = reasons(await build({ prep: 'echo p2 > /out/p' }));
    assert.deepEqual(all.get('/bin/sh -c echo p2 > /out/p')?.fields, [{ path: 'meta.args[2]', old: '"echo p1 > /out/p"', new: '"echo p2 > /out/p"' }]);
    const step = [...all].find(([name]) => name.startsWith('/bin/sh -c cat'))?.[1];
    assert.deepEqual(step, { kind: 'changed', fields: [], inputs: ['prep'] });
  });

  test('--no-cache says so on every vertex', async () => {
    const all = reasons(await build({}, ['--progress', 'rawjson', '--no-cache']));
    assert.equal(all.size, 6);
    for (const [name, reason] of all) assert.deepEqual(reason, { kind: 'no-cache', by: '--no-cache' }, name);
  });

  test('kiln prune --all drops the history with the results: the next build has no earlier build to compare with', async () => {
    const pruned = await kiln(['prune', '--all', '--root', suite.root]);
    assert.equal(pruned.exitCode, 0, pruned.stderr);
    const all = reasons(await build({ script: 'echo after prune > /out/r' }));
    assert.equal(all.size, 6);
    for (const [name, reason] of all) assert.deepEqual(reason, { kind: 'first-build' }, name);
  });

  test("the secret's value and the URL password are in no output and no file of the root", async () => {
    for (const run of printed) {
      assert.ok(!run.stderr.includes(secret) && !run.stdout.includes(secret), 'secret printed');
      assert.ok(!run.stderr.includes(password) && !run.stdout.includes(password), 'password printed');
    }
    const needles = [Buffer.from(secret), Buffer.from(password)];
    const walk = async (dir: string): Promise<void> => {
      for (const name of await readdir(dir)) {
        const path = join(dir, name);
        const info = await lstat(path);
        if (info.isDirectory()) await walk(path);
        else if (info.isFile()) {
          const bytes = await readFile(path);
          for (const needle of needles) assert.ok(!bytes.includes(needle), `${path} holds a secret`);
        }
      }
    };
    await walk(suite.root);
  });
});
