/**
 * What must hold when things go wrong: hostile paths stay inside their
 * filesystem, a SIGKILLed build leaves a usable cache, two builds share a
 * root safely, and prune never removes what is in use.
 */
import assert from 'node:assert/strict';
import { lstat, mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { assertSameTree, kiln, mountsUnder, removeDir, startKiln, tempDir, vertices } from './harness.js';

describe('hostile paths', () => {
  let work: string;
  before(async () => {
    work = await tempDir('hostile');
  });
  after(async () => removeDir(work));

  test('no action, selector or symlink reaches outside its filesystem', async () => {
    const sentinel = join(work, 'sentinel');
    await mkdir(sentinel);
    await writeFile(join(sentinel, 'keep'), 'untouched');
    const context = join(work, 'ctx');
    await mkdir(context);
    await writeFile(join(context, 'ok.txt'), 'ok');
    // Links that would escape if followed on the host.
    await symlink('/etc', join(context, 'etc-link'));
    await symlink('../../../../../../../', join(context, 'up'));
    await symlink(sentinel, join(context, 'to-sentinel'));
    // The context's own /etc: what /etc-link must resolve to inside the snapshot.
    await mkdir(join(context, 'etc'));
    await writeFile(join(context, 'etc', 'mine'), 'inside');
    const def = {
      version: 1,
      ops: {
        ctx: { source: { identifier: 'local://ctx' } },
        evil: {
          inputs: ['ctx'],
          file: {
            actions: [
              { input: 0, output: -1, mkfile: { path: '/up/../../escaped-mkfile', mode: '0644', data: 'x' } },
              { input: 1, output: -1, mkdir: { path: '/to-sentinel/made-by-kiln', mode: '0755', makeParents: true } },
              { input: 2, output: -1, symlink: { oldpath: '/', newpath: '/root-link' } },
              { input: 3, output: -1, mkfile: { path: '/root-link/../../via-root-link', mode: '0644', data: 'y' } },
              { input: 4, secondaryInput: 0, output: 0, copy: { src: '/etc-link/', dest: '/copied-etc', followSymlink: true, createDestPath: true, dirCopyContents: true } },
            ],
          },
        },
      },
      result: 'evil',
    };
    const file = join(work, 'evil.json');
    await writeFile(file, JSON.stringify(def));
    const out = join(work, 'out');
    const r = await kiln(['build', file, '--root', join(work, 'root'), '--local', `ctx=${context}`, '--output', `type=local,dest=${out}`]);
    assert.equal(r.exitCode, 0, r.stderr);
    // Everything landed inside the result...
    assert.equal(await readFile(join(out, 'escaped-mkfile'), 'utf8'), 'x');
    assert.equal(await readFile(join(out, 'via-root-link'), 'utf8'), 'y');
    // to-sentinel points at an absolute host path: inside the snapshot that path is the snapshot's own.
    assert.ok((await lstat(join(out, sentinel, 'made-by-kiln'))).isDirectory());
    // ...the copy through /etc-link read the snapshot's own /etc, not the host's.
    assert.deepEqual(await readdir(join(out, 'copied-etc')), ['mine']);
    // ...and nothing outside changed.
    assert.deepEqual(await readdir(sentinel), ['keep']);
    assert.equal(await readFile(join(sentinel, 'keep'), 'utf8'), 'untouched');
    await assert.rejects(lstat('/escaped-mkfile'));
    await assert.rejects(lstat('/via-root-link'));
  });
});

describe('crash safety and concurrency', () => {
  let work: string;
  let context: string;
  let def: string;
  before(async () => {
    work = await tempDir('crash');
    context = join(work, 'ctx');
    // Enough files that hashing and copying take a noticeable time.
    for (let d = 0; d < 20; d++) {
      await mkdir(join(context, `d${d}`), { recursive: true });
      for (let f = 0; f < 100; f++) await writeFile(join(context, `d${d}`, `f${f}`), `${d}/${f}\n`.repeat(500));
    }
    def = join(work, 'def.json');
    const chain: Record<string, unknown> = { ctx: { source: { identifier: 'local://ctx' } } };
    let prev = 'ctx';
    for (let i = 0; i < 20; i++) {
      chain[`step${i}`] = { inputs: [prev], file: { actions: [{ input: 0, output: 0, mkfile: { path: `/step${i}`, mode: '0644', data: `${i}` } }] } };
      prev = `step${i}`;
    }
    chain['copy'] = { inputs: [prev, 'ctx'], file: { actions: [{ input: 0, secondaryInput: 1, output: 0, copy: { src: '/', dest: '/again', dirCopyContents: true, createDestPath: true } }] } };
    await writeFile(def, JSON.stringify({ version: 1, ops: chain, result: 'copy' }));
  });
  after(async () => removeDir(work));

  test('a build killed with SIGKILL at any point leaves the root usable', async () => {
    const root = join(work, 'root-kill');
    for (const delay of [150, 400, 800, 1500]) {
      const child = startKiln(['build', def, '--root', root, '--local', `ctx=${context}`, '--progress', 'rawjson']);
      await new Promise((r) => setTimeout(r, delay));
      child.kill('SIGKILL');
      await child;
    }
    const out = join(work, 'out-after-kill');
    const r = await kiln(['build', def, '--root', root, '--local', `ctx=${context}`, '--output', `type=local,dest=${out}`, '--progress', 'rawjson']);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(await readFile(join(out, 'again', 'd3', 'f7'), 'utf8'), '3/7\n'.repeat(500));
    assert.equal(await readFile(join(out, 'step19'), 'utf8'), '19');
    assert.deepEqual(await mountsUnder(root), [], 'no mount left behind');
    const clean = join(work, 'out-clean');
    const fresh = await kiln(['build', def, '--root', join(work, 'root-fresh'), '--local', `ctx=${context}`, '--output', `type=local,dest=${clean}`]);
    assert.equal(fresh.exitCode, 0, fresh.stderr);
    await assertSameTree(clean, out);
  });

  test('two concurrent builds on one root both succeed with the same result', async () => {
    const root = join(work, 'root-concurrent');
    const outs = [join(work, 'c1'), join(work, 'c2')];
    const runs = await Promise.all(outs.map((o) => startKiln(['build', def, '--root', root, '--local', `ctx=${context}`, '--output', `type=local,dest=${o}`])));
    for (const r of runs) assert.equal(r.exitCode, 0, String(r.stderr));
    await assertSameTree(outs[0] ?? '', outs[1] ?? '');
    const third = await kiln(['build', def, '--root', root, '--local', `ctx=${context}`, '--progress', 'rawjson']);
    for (const v of vertices(third.stderr).values()) assert.equal(v.cached, true, `${v.name} cached after the concurrent builds`);
  });

  test('du lists records; prune --all removes them and the next build reruns', async () => {
    const root = join(work, 'root-prune');
    const first = await kiln(['build', def, '--root', root, '--local', `ctx=${context}`]);
    assert.equal(first.exitCode, 0, first.stderr);
    const du = await kiln(['du', '--root', root]);
    assert.equal(du.exitCode, 0, du.stderr);
    assert.match(du.stdout, /mkfile \/step19/);
    assert.match(du.stdout, /Total:/);
    const prune = await kiln(['prune', '--all', '--root', root]);
    assert.equal(prune.exitCode, 0, prune.stderr);
    assert.match(prune.stdout, /reclaimed/);
    const after = await kiln(['du', '--root', root]);
    assert.doesNotMatch(after.stdout, /mkfile \/step19/);
    const rerun = await kiln(['build', def, '--root', root, '--local', `ctx=${context}`, '--progress', 'rawjson']);
    assert.ok([...vertices(rerun.stderr).values()].some((v) => !v.cached), 'pruned results are built again');
  });

  test('prune never removes what a running build holds', async () => {
    const root = join(work, 'root-prune-busy');
    const out = join(work, 'busy-out');
    const build = startKiln(['build', def, '--root', root, '--local', `ctx=${context}`, '--output', `type=local,dest=${out}`]);
    for (let i = 0; i < 10; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const p = await kiln(['prune', '--all', '--root', root]);
      assert.equal(p.exitCode, 0, p.stderr);
    }
    const r = await build;
    assert.equal(r.exitCode, 0, String(r.stderr));
    assert.equal(await readFile(join(out, 'again', 'd0', 'f0'), 'utf8'), '0/0\n'.repeat(500));
  });
});
