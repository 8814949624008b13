/**
 * Cache mounts end to end through the CLI, on each worker (runc, and
 * containerd against a private containerd): persistence across builds and
 * processes, the three sharing modes with two kiln processes at once,
 * seeding from an input, and `kiln du` / `kiln prune`.
 */
import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { busyboxOps, WORKERS, workerSuite } from './workers.js';
import { kiln as runKiln, startKiln as startKilnProcess, vertices } from './harness.js';


/** An exec op on `base` running `script`, with the cache mount `cache` at /cache and a scratch /out as its result. */
function withCache(script: string, cache: Record<string, unknown>, env: readonly string[] = []): Record<string, unknown> {
  return {
    inputs: ['base'],
    exec: {
      meta: { args: ['/bin/sh', '-c', script], env },
      mounts: [
        { dest: '/', input: 0, output: -1, readonly: true },
        { dest: '/out', input: -1, output: 0 },
        { dest: '/cache', type: 'cache', input: -1, output: -1, ...cache },
      ],
    },
  };
}

for (const workerId of WORKERS) {
describe(`cache mounts on the ${workerId} worker`, () => {
  const suite = workerSuite(workerId, 'cache-mount');
  const { workerArgs } = suite;
  let n = 0;
  const kiln = (args: readonly string[]) => runKiln([...args, ...workerArgs(args[0])]);

  /** The `kiln build` arguments of a definition of `ops` (on the busybox base) with result `result`, and its output dir. */
  const definition = async (ops: Record<string, unknown>, result: string) => {
    const file = join(suite.work, `def${n}.json`);
    const out = join(suite.work, `out${n++}`);
    await writeFile(file, JSON.stringify({ version: 1, ops: { ...(await busyboxOps()), ...ops }, result }));
    const args = ['build', file, '--root', suite.root, '--local', 'tools=/bin', '--output', `type=local,dest=${out}`, '--progress', 'rawjson', ...workerArgs('build')];
    return { args, out };
  };
  const build = async (ops: Record<string, unknown>, result: string) => {
    const { args, out } = await definition(ops, result);
    return { run: await runKiln(args), out, args };
  };
  /** Starts two builds at once (two kiln processes) and waits for both. */
  const buildTwo = async (a: Record<string, unknown>, b: Record<string, unknown>) => {
    const defs = [await definition({ a }, 'a'), await definition({ b }, 'b')];
    const runs = await Promise.all(defs.map((d) => startKilnProcess(d.args)));
    for (const r of runs) assert.equal(r.exitCode, 0, String(r.stderr));
    return defs.map((d) => d.out);
  };
  const read = (dir: string, name: string) => readFile(join(dir, name), 'utf8');

  test('a second build sees the first build’s files; the op is still cached and the cache is in no output', async () => {
    const first = await build(
      {
        fill: {
          inputs: ['base'],
          exec: {
            meta: { args: ['/bin/sh', '-c', 'echo from-first >> /cache/log; echo done > /done'] },
            mounts: [
              { dest: '/', input: 0, output: 0 },
              { dest: '/cache', type: 'cache', cache: { id: 'persist' } },
            ],
          },
        },
      },
      'fill',
    );
    assert.equal(first.run.exitCode, 0, first.run.stderr);
    assert.deepEqual((await readdir(first.out)).sort(), ['bin', 'dev', 'done', 'proc', 'sys'], 'neither the cache nor its mount point is in the output');
    const again = await runKiln(first.args);
    assert.equal(again.exitCode, 0, again.stderr);
    for (const v of vertices(again.stderr).values()) assert.equal(v.cached, true, `${v.name} cached`);
    const second = await build({ peek: withCache('cat /cache/log > /out/log', { cache: { id: 'persist' } }) }, 'peek');
    assert.equal(second.run.exitCode, 0, second.run.stderr);
    assert.equal(await read(second.out, 'log'), 'from-first\n', 'the cached rerun did not run the step again');
  });

  test('shared: two kiln processes at once append to one file', async () => {
    const step = (mark: string) => withCache(`echo ${mark} >> /cache/log; sleep 1`, { cache: { id: 'shared-log', sharing: 'shared' } }, [`MARK=${mark}`]);
    await buildTwo(step('line-a'), step('line-b'));
    const { run, out } = await build({ show: withCache('cat /cache/log > /out/log', { cache: { id: 'shared-log' } }) }, 'show');
    assert.equal(run.exitCode, 0, run.stderr);
    assert.deepEqual((await read(out, 'log')).split('\n').filter((l) => l !== '').sort(), ['line-a', 'line-b']);
  });

  test('private: two builds at once each see only what they wrote', async () => {
    const step = (mark: string) => withCache(`echo ${mark} >> /cache/marks; sleep 1; cat /cache/marks > /out/marks`, { cache: { id: 'private-marks', sharing: 'private' } }, [`MARK=${mark}`]);
    const [a, b] = await buildTwo(step('a'), step('b'));
    assert.equal(await read(a ?? '', 'marks'), 'a\n');
    assert.equal(await read(b ?? '', 'marks'), 'b\n');
  });

  test('locked: the second build starts its process only after the first released the cache', async () => {
    const step = (mark: string) =>
      withCache(`cut -d' ' -f1 /proc/uptime > /out/start; sleep 1.5; cut -d' ' -f1 /proc/uptime > /out/end`, { cache: { id: 'locked-cache', sharing: 'locked' } }, [`MARK=${mark}`]);
    const outs = await buildTwo(step('a'), step('b'));
    const spans = await Promise.all(outs.map(async (out) => ({ start: Number(await read(out ?? '', 'start')), end: Number(await read(out ?? '', 'end')) })));
    const [x, y] = spans.sort((p, q) => p.start - q.start);
    assert.ok(x !== undefined && y !== undefined);
    assert.ok(y.start >= x.end, `the second started at ${y.start}, before the first ended at ${x.end}`);
  });

  test('a cache mount with an input is seeded from it the first time', async () => {
    const seeded = {
      inputs: ['base'],
      exec: {
        meta: { args: ['/bin/sh', '-c', 'ls /cache > /out/ls; touch /cache/added'] },
        mounts: [
          { dest: '/', input: 0, output: -1, readonly: true },
          { dest: '/out', input: -1, output: 0 },
          { dest: '/cache', type: 'cache', input: 0, selector: '/bin', cache: { id: 'seeded' } },
        ],
      },
    };
    const first = await build({ seeded }, 'seeded');
    assert.equal(first.run.exitCode, 0, first.run.stderr);
    const listed = (await read(first.out, 'ls')).split('\n');
    assert.ok(listed.includes('busybox') && listed.includes('sh'), `seeded with /bin of the input: ${listed.join(' ')}`);
    const second = await build({ later: withCache('ls /cache > /out/ls', { cache: { id: 'seeded' } }) }, 'later');
    assert.equal(second.run.exitCode, 0, second.run.stderr);
    assert.ok((await read(second.out, 'ls')).split('\n').includes('added'), 'the seeded directory is the one kept');
  });

  test('kiln du lists a cache mount; kiln prune --all removes it, but not while a build uses it', async () => {
    const id = `du-prune-${workerId}`;
    const filled = await build({ fill: withCache(`head -c 200000 /dev/zero > /cache/blob`, { cache: { id } }) }, 'fill');
    assert.equal(filled.run.exitCode, 0, filled.run.stderr);
    const du = await kiln(['du', '--root', suite.root, '--verbose']);
    assert.equal(du.exitCode, 0, du.stderr);
    assert.match(du.stdout, new RegExp(`Kind:\\t\\tcache-mount\\nDescription:\\t${id}\\nSize:\\t\\t\\d`));

    const { args } = await definition({ hold: withCache('touch /cache/holding; sleep 4', { cache: { id } }) }, 'hold');
    const holding = startKilnProcess(args);
    await waitFor(async () => /In use:\t\ttrue/.test(blockOf((await kiln(['du', '--root', suite.root, '--verbose'])).stdout, id)));
    const refused = await kiln(['prune', '--root', suite.root, '--all']);
    assert.equal(refused.exitCode, 0, refused.stderr);
    assert.doesNotMatch(refused.stdout, new RegExp(id), 'not removed while in use');
    assert.equal((await holding).exitCode, 0);

    const pruned = await kiln(['prune', '--root', suite.root, '--all']);
    assert.equal(pruned.exitCode, 0, pruned.stderr);
    assert.match(pruned.stdout, new RegExp(id));
    assert.doesNotMatch((await kiln(['du', '--root', suite.root])).stdout, new RegExp(id));
  });
});
}

/** The `kiln du --verbose` block of the cache mount described `description`. */
function blockOf(stdout: string, description: string): string {
  return stdout.split('\n\n').find((block) => block.includes(`Description:\t${description}\n`)) ?? '';
}

async function waitFor(check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('timed out waiting');
}
