/**
 * 16 independent exec ops of `sleep 1` on the busybox base, merged by one
 * op (BuildKit's "16 stages joined by COPY --from"), as a whole `kiln
 * build` with kiln's defaults: the ops wait on their processes, so they
 * should all run at once, whatever the CPU count.
 *
 * Floor, alternated with it, 5 turns: the same build with one stage. Each
 * turn has its own salt, so nothing is cached but the base. Figures: the
 * 16 stages' span (first start to the merge's end) against 1.5 s (issue
 * 20), and against the one stage's span (ratio). One more 16-stage build
 * with `--parallelism 4` shows the flag still caps (about 4 waves).
 *
 * A second floor in every turn: 16 bare `runc run`s of `sleep 1` started at
 * once by this bench, each with the config.json kiln's spec builder writes
 * for such a step (seccomp, capabilities, namespaces) on the base's rootfs,
 * read-only: what the runtime alone costs for 16 containers on this
 * machine, with no kiln, network or snapshot around them.
 *
 * First exec (issue 20, target 2): in each 1-stage build, the time from
 * the bench's spawn of the kiln process to its exec op's start, against
 * `node -e ''` measured in the same turn (a process that only starts).
 */
import { spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { buildOciSpec, hostsFile, ociJson, plainProcessMeta } from '../src/executor/oci-spec.js';
import { boundingCapabilities, hostSpecOptions, sandboxSeccomp } from '../src/executor/process-facts.js';
import type { RawDefinition, RawOp } from '../src/llb/json-types.js';
import { DEFAULT_PATH_ENV } from '../src/llb/types.js';
import { defaultParallelism } from '../src/solver/solve.js';
import { baseOps, definition, sleepOp, timesOf, TOOLS } from './busybox.js';
import { median, printContext, printFigure, printHeader, printReproduce, runKiln, runNode, tempDir } from './harness.js';

const STAGES = 16;
const TURNS = 5;
const SLEEP = '1';
const TARGET_SPAN_SECONDS = 1.5;
const CAPPED = 4;
/** Issue 20, target 2: the first exec op starts at most this long after `node -e ''` would have ended. */
const TARGET_FIRST_EXEC_OVER_NODE_MS = 100;

/**
 * Starts `count` bare `runc run`s of `sleep SLEEP` at once, each in a bundle
 * of its own with kiln's spec over the read-only `rootfs`; the wall time
 * from the first start to the last exit (ms).
 */
async function bareRuncs(dir: string, rootfs: string, count: number, turn: number): Promise<number> {
  const meta = plainProcessMeta(['/bin/sleep', SLEEP], [DEFAULT_PATH_ENV]);
  const host = await hostSpecOptions(await boundingCapabilities(), (await sandboxSeccomp()).filter, meta);
  const bundles: { bundle: string; id: string }[] = [];
  for (let i = 0; i < count; i++) {
    const id = `kiln-bench-bare-${process.pid}-${turn}-${i}`;
    const bundle = path.join(dir, 'bare', id);
    await mkdir(bundle, { recursive: true });
    const hostsPath = path.join(bundle, 'hosts');
    const spec = buildOciSpec({ id, meta, rootPath: rootfs, rootReadonly: true, mounts: [], hostsPath, ...host });
    await writeFile(hostsPath, hostsFile(spec.hostname, []));
    await writeFile(path.join(bundle, 'config.json'), ociJson(spec));
    bundles.push({ bundle, id });
  }
  const state = path.join(dir, 'bare-state');
  const started = performance.now();
  await Promise.all(
    bundles.map(
      ({ bundle, id }) =>
        new Promise<void>((resolve, reject) => {
          const child = spawn('runc', ['--root', state, 'run', '--bundle', bundle, id], { stdio: ['ignore', 'ignore', 'pipe'] });
          let stderr = '';
          child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
          child.once('error', reject);
          child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`runc run ${id} exited with ${code ?? 'a signal'}: ${stderr}`))));
        }),
    ),
  );
  return performance.now() - started;
}

/** `stage-0..N-1` and `join`, the merge of them all; `salt` makes them new. */
function stageOps(count: number, salt: string): Record<string, RawOp> {
  const ops: Record<string, RawOp> = {};
  for (let i = 0; i < count; i++) ops[`stage-${i}`] = sleepOp(`${salt}stage ${i}`, SLEEP);
  const names = Object.keys(ops);
  ops['join'] = { inputs: names, merge: { inputs: names.map((_, i) => i) }, metadata: { description: { 'llb.customname': `${salt}join` } } };
  return ops;
}

const names = (count: number, salt: string): string[] => [...Array.from({ length: count }, (_, i) => `${salt}stage ${i}`), `${salt}join`];

async function main(): Promise<void> {
  printHeader(`parallel-stages: ${STAGES} x sleep ${SLEEP} merged, whole-process \`kiln build\` (default parallelism ${defaultParallelism()})`, { runsProcesses: true });
  await using dir = await tempDir('parallel-stages');
  const base = await baseOps();
  const root = path.join(dir.path, 'root');
  const build = async (name: string, def: RawDefinition, extra: readonly string[] = []): Promise<string[]> => {
    const file = path.join(dir.path, `${name}.json`);
    await writeFile(file, JSON.stringify(def));
    return ['build', file, '--root', root, '--local', `tools=${TOOLS}`, '--progress', 'rawjson', ...extra];
  };
  // The warm-up builds the base, and exports it as the bare runs' rootfs.
  const rootfs = path.join(dir.path, 'rootfs');
  await runKiln([...(await build('base', definition(base, {}, 'base'))), '--output', `type=local,dest=${rootfs}`], dir.path);

  const spans: number[] = [];
  const walls: number[] = [];
  const floors: number[] = [];
  const bare: number[] = [];
  const firstExec: number[] = [];
  const nodeStarts: number[] = [];
  for (let turn = 0; turn < TURNS; turn++) {
    nodeStarts.push((await runNode(['-e', ''], dir.path)).wallMs);
    const one = `one${turn}-`;
    const oneArgs = await build(`one-${turn}`, definition(base, stageOps(1, one), 'join'));
    const spawned = Date.now();
    const oneRun = await runKiln(oneArgs, dir.path);
    const oneTimes = timesOf(oneRun, names(1, one));
    floors.push(oneTimes.span);
    firstExec.push(Math.min(...oneTimes.starts) - spawned);
    bare.push(await bareRuncs(dir.path, rootfs, STAGES, turn));
    const wide = `wide${turn}-`;
    const wideRun = await runKiln(await build(`wide-${turn}`, definition(base, stageOps(STAGES, wide), 'join')), dir.path);
    spans.push(timesOf(wideRun, names(STAGES, wide)).span);
    walls.push(wideRun.wallMs);
  }
  const capped = await runKiln(await build('capped', definition(base, stageOps(STAGES, 'capped-'), 'join'), ['--parallelism', String(CAPPED)]), dir.path);
  const cappedSpan = timesOf(capped, names(STAGES, 'capped-')).span;

  const list = (values: readonly number[]): string => values.map((v) => `${(v / 1000).toFixed(3)} s`).join(', ');
  console.log(`  ${STAGES} stages, span per turn: ${list(spans)}`);
  console.log(`  1 stage (floor), span per turn: ${list(floors)}`);
  console.log(`  ${STAGES} bare runc run at once (floor), wall per turn: ${list(bare)}`);
  printContext(`${STAGES} stages: whole process (median)`, median(walls) / 1000, 's');
  printContext('1 stage: span (median)', median(floors) / 1000, 's');
  printContext(`${STAGES} bare runc run at once: wall (median)`, median(bare) / 1000, 's');
  printContext(`${STAGES} stages / 1 stage (medians)`, median(spans) / median(floors), 'x', 2);
  printContext(`${STAGES} stages / ${STAGES} bare runc (medians)`, median(spans) / median(bare), 'x', 2);
  printContext("first exec: spawn to the exec op's start (median)", median(firstExec), 'ms', 0);
  printContext("node -e '' (median)", median(nodeStarts), 'ms', 0);
  printContext(`--parallelism ${CAPPED}: span (${Math.ceil(STAGES / CAPPED)} waves expected)`, cappedSpan / 1000, 's');
  const ok = printFigure({ label: `${STAGES} stages: span (median of ${TURNS})`, value: median(spans) / 1000, target: TARGET_SPAN_SECONDS, unit: 's' });
  const firstOk = printFigure({
    label: "first exec start - node -e '' (medians)",
    value: median(firstExec) - median(nodeStarts),
    target: TARGET_FIRST_EXEC_OVER_NODE_MS,
    unit: 'ms',
    digits: 0,
  });
  printReproduce('parallel-stages.js');
  if (!ok || !firstOk) process.exitCode = 1;
}

await main();
