/**
 * The fault suite: kiln is killed with SIGKILL at seeded random points of an
 * exec, an export and a prune, and each time the next kiln must build the
 * right result and leave nothing behind: no mount, no container process, no
 * staging file in an output directory. Set KILN_FAULT_SEED to replay a run.
 */
import assert from 'node:assert/strict';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { assertSameTree, kiln, mountsUnder, removeDir, startKiln, tempDir } from './harness.js';

/** A tag in the containers' command lines, to find any process a killed kiln left running. */
const MARKER = 'kiln-fault-marker';
const KILLS = 20;

describe('faults', () => {
  let work: string;
  let def: string;
  let context: string;
  before(async () => {
    work = await tempDir('faults');
    context = join(work, 'context');
    await mkdir(context);
    def = join(work, 'def.json');
    const exec = (input: string, script: string, extra: object[] = []) => ({
      inputs: [input, ...extra.map(() => 'ctx')],
      exec: {
        meta: { args: ['/bin/sh', '-c', `${script} # ${MARKER}`], env: ['PATH=/bin'] },
        mounts: [{ dest: '/', input: 0, output: 0 }, ...extra],
      },
    });
    await writeFile(
      def,
      JSON.stringify({
        version: 1,
        ops: {
          tools: { source: { identifier: 'local://tools', attrs: { 'local.includepatterns': '["busybox"]' } } },
          ctx: { source: { identifier: 'local://context' } },
          bin: {
            inputs: ['tools'],
            file: {
              actions: [
                { input: -1, output: -1, mkdir: { path: '/bin', mode: '0755' } },
                { input: 1, secondaryInput: 0, output: 0, copy: { src: '/busybox', dest: '/bin/busybox', mode: '0755', followSymlink: true } },
              ],
            },
          },
          base: { inputs: ['bin'], exec: { meta: { args: ['/bin/busybox', '--install', '-s', '/bin'] }, mounts: [{ dest: '/', input: 0, output: 0 }] } },
          // Reruns whenever the context changes; slow enough for kills to land inside it.
          step: exec('base', 'cp /ctx/iteration /iteration && sleep 0.3 && dd if=/dev/zero of=/big bs=1M count=24 2>/dev/null && sync', [{ dest: '/ctx', input: 1, readonly: true }]),
        },
        result: 'step',
      }),
    );
  });
  after(async () => removeDir(work));

  test(`${KILLS} seeded SIGKILLs in exec, export and prune, each followed by a correct build`, async () => {
    const seed = Number(process.env['KILN_FAULT_SEED'] ?? Date.now() % 100_000);
    const random = mulberry32(seed);
    const note = `KILN_FAULT_SEED=${seed}`;
    const root = join(work, 'root');
    const outLocal = join(work, 'out-local');
    const outArchives = join(work, 'out-archives');
    await mkdir(outArchives);
    const outputs = ['-o', `type=local,dest=${outLocal}`, '-o', `type=oci,dest=${join(outArchives, 'image.tar')},name=fault/test:1`];
    const buildArgs = ['build', def, '--root', root, '--local', 'tools=/bin', '--local', `context=${context}`];

    for (let i = 0; i < KILLS; i++) {
      await writeFile(join(context, 'iteration'), `${i}\n`);
      const pruning = random() < 0.25;
      const child = pruning ? startKiln(['prune', '--all', '--root', root]) : startKiln([...buildArgs, ...outputs]);
      // Builds run 1-3 s here: a delay in that range lands in keying, exec, commit or export.
      const delay = Math.floor(random() * (pruning ? 300 : 2500));
      await new Promise((r) => setTimeout(r, delay));
      child.kill('SIGKILL');
      await child;
    }

    await writeFile(join(context, 'iteration'), 'final\n');
    const r = await kiln([...buildArgs, ...outputs]);
    assert.equal(r.exitCode, 0, `${note}\n${r.stderr}`);
    const fresh = join(work, 'out-fresh');
    const reference = await kiln(['build', def, '--root', join(work, 'root-fresh'), '--local', 'tools=/bin', '--local', `context=${context}`, '-o', `type=local,dest=${fresh}`]);
    assert.equal(reference.exitCode, 0, reference.stderr);
    await assertSameTree(fresh, outLocal);

    assert.deepEqual(await mountsUnder(root), [], `${note}: no mount left behind`);
    assert.deepEqual(await leftoverProcesses(), [], `${note}: no container process left behind`);
    assert.deepEqual((await readdir(outLocal)).filter((n) => n.includes('kiln-')), [], `${note}: no staging left in the local output`);
    assert.deepEqual(await readdir(outArchives), ['image.tar'], `${note}: no staging left beside the archive`);
    const check = await execa('tar', ['-tf', join(outArchives, 'image.tar')]);
    assert.match(check.stdout, /index\.json/);
  });

  test('concurrent builds and prunes on one root all succeed', async () => {
    const root = join(work, 'root-concurrent');
    const outs = [0, 1, 2].map((i) => join(work, `concurrent-${i}`));
    const builds = outs.map((o) => startKiln(['build', def, '--root', root, '--local', 'tools=/bin', '--local', `context=${context}`, '-o', `type=local,dest=${o}`]));
    const prunes = (async () => {
      for (let i = 0; i < 6; i++) {
        const p = await kiln(['prune', '--all', '--root', root]);
        assert.equal(p.exitCode, 0, p.stderr);
      }
    })();
    for (const b of await Promise.all(builds)) assert.equal(b.exitCode, 0, String(b.stderr));
    await prunes;
    for (const o of outs.slice(1)) await assertSameTree(outs[0] ?? '', o);
  });
});

/** Processes still running a container step of this suite. */
async function leftoverProcesses(): Promise<string[]> {
  const { stdout } = await execa('ps', ['-eo', 'pid,args', '--no-headers']);
  return stdout.split('\n').filter((line) => line.includes(MARKER) && !line.includes('ps -eo'));
}

/** A small seeded generator: the same seed gives the same kill points. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
