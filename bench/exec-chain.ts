/**
 * exec ops through runc, against what runc alone costs. On the busybox
 * rootfs of llb-examples/busybox.json (built first, in a warm-up build on
 * the same fresh root, so it is cached for everything timed):
 *
 * 1. cold chain: 20 exec ops of `/bin/true`, each on the previous one's
 *    rootfs, none cached (each sets its own `STEP=i`, and each turn its own
 *    salt), against the floor of
 *    20 bare `runc run` calls of `/bin/true` on the same rootfs, made by this
 *    bench. The floor runs the container kiln asks runc for: the config.json
 *    kiln's spec builder writes for such a step (the default seccomp
 *    profile, the same mounts and namespaces), the rootfs as an overlay with
 *    a fresh upper dir, as kiln hands it to runc. Target: the 20 steps <=
 *    1.5x the floor. For context, the same 20 runs with the config `runc
 *    spec` writes (no seccomp filter: runc compiles the profile's ~430
 *    syscall rules for three architectures into BPF in every container it
 *    starts, ~20 ms here) are timed too. The same chain (new keys) then runs
 *    on the containerd worker, against a private containerd the bench
 *    starts. Target: <= 2x the same floor. The floor and the two chains
 *    are measured in 5 turns, and each ratio is the median of its turns.
 * 2. fan: 16 independent exec ops of `sleep 0.5` merged by one op, against
 *    the ideal of ceil(16 / parallelism) x one op (a 1-op build; the
 *    default parallelism, from the memory, does not cap exec ops at the CPUs). Sleep, not a
 *    CPU-bound command: it measures kiln's scheduling and per-op overhead,
 *    not how two cores share work. Target: <= 1.2x the ideal.
 *    The chain also runs with `network: none` each turn: the sandbox
 *    network (a namespace from kiln's pool on its CNI bridge) costs at most
 *    5 ms per step at the median (target).
 * 3. cached rebuild: the chain again, all cached, as a whole `kiln build`
 *    process, alternated with `node -e ''` (5 turns): median of each.
 *    Target (issue 20): at most node's start + 50 ms; also <= 150 ms.
 *
 * `--profile` also runs one more cold chain and one more cached rebuild
 * under `node --cpu-prof` and prints where their CPU time goes.
 */
import { spawnSync } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { buildOciSpec, hostsFile, ociJson, plainProcessMeta, renderMount } from '../src/executor/oci-spec.js';
import { boundingCapabilities, hostSpecOptions, sandboxSeccomp } from '../src/executor/process-facts.js';
import type { ProcessMeta } from '../src/executor/types.js';
import type { RawDefinition, RawOp } from '../src/llb/json-types.js';
import { baseOps, definition, sleepOp, timesOf, TOOLS } from './busybox.js';
import type { Mount } from '../src/snapshot/types.js';
import { DEFAULT_PATH_ENV } from '../src/llb/types.js';
import { defaultParallelism } from '../src/solver/solve.js';
import { connectContainerd } from '../src/executor/containerd/client.js';
import { RUNTIME, SHIM_GROUP_ANNOTATION } from '../src/executor/containerd/executor.js';
import { ShimRunc } from '../src/executor/containerd/shim-runc.js';
import { startContainerd } from '../test/support/containerd.js';
import { profileKiln } from './cpu-profile.js';
import { median, printContext, printFigure, printHeader, printReproduce, type ProcessRun, runKiln, runNode, summarizeProgress, sum, tempDir } from './harness.js';

const STEPS = 20;
const FAN = 16;
const SLEEP_SECONDS = '0.5';
const RUNS = 5;
/**
 * The floor and both cold chains are measured in turns, this many times,
 * and each figure is the median of its turns' ratios: the machine's speed
 * drifts by ±10% over a minute, which one floor measured before both
 * chains would put into their ratios.
 */
const ROUNDS = 5;
const TARGET_CHAIN_RATIO = 1.5;
/** Issue 5: the containerd worker's cold chain against the same bare-runc floor. */
const TARGET_CONTAINERD_RATIO = 2;
/** Issue 20: a step on the containerd worker costs at most this much times a step on the runc worker (medians of the same turn). */
const TARGET_CONTAINERD_STEP_RATIO = 1.3;
const TARGET_FAN_RATIO = 1.2;
const TARGET_CACHED_SECONDS = 0.15;
/** Issue 20: a cached rebuild costs at most this much more than `node -e ''`, medians of alternated runs. */
const TARGET_CACHED_OVER_NODE_MS = 50;
/** Issue 15: a sandbox-network step costs at most this much more than a `none` one, at the median. */
const TARGET_NETWORK_MS = 5;

/**
 * The chain `step-0..19`, each `/bin/true` on the previous one's rootfs;
 * `salt` makes a chain none of whose steps is cached. `network`: the steps'
 * mode (the default, sandbox, is a namespace of its own on kiln's bridge).
 */
function chainOps(salt: string, network: 'sandbox' | 'none' = 'sandbox'): Record<string, RawOp> {
  const ops: Record<string, RawOp> = {};
  for (let i = 0; i < STEPS; i++) {
    ops[`step-${i}`] = {
      inputs: [i === 0 ? 'base' : `step-${i - 1}`],
      exec: { meta: { args: ['/bin/true'], env: [`STEP=${salt}${i}`] }, mounts: [{ dest: '/', input: 0, output: 0 }], network },
      metadata: { description: { 'llb.customname': `step ${i}` } },
    };
  }
  return ops;
}

/** `fan-0..15` and `fan`, the merge of them all. */
function fanOps(): Record<string, RawOp> {
  const ops: Record<string, RawOp> = {};
  for (let i = 0; i < FAN; i++) ops[`fan-${i}`] = sleepOp(`fan ${i}`, SLEEP_SECONDS);
  ops['fan'] = { inputs: Object.keys(ops), merge: { inputs: Object.keys(ops).map((_, i) => i) }, metadata: { description: { 'llb.customname': 'fan merge' } } };
  return ops;
}

/** Runs runc to completion; throws unless it exits 0. */
function runc(args: readonly string[]): void {
  const r = spawnSync('runc', args, { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.error !== undefined) throw r.error;
  if (r.status !== 0) throw new Error(`runc ${args.join(' ')} exited with ${r.status ?? r.signal}: ${r.stderr}`);
}

/** `runs` sequential `runc run` calls of the bundle in `bundle`, runc's state in `state`; each call's wall ms. */
async function timeRuncRuns(bundle: string, state: string, runs: number, beforeEach: (i: number) => Promise<void> = async () => {}): Promise<number[]> {
  const walls: number[] = [];
  for (let i = 0; i < runs; i++) {
    await beforeEach(i);
    const started = performance.now();
    runc(['--root', state, 'run', '--bundle', bundle, `kiln-bench-floor-${path.basename(bundle)}-${i}`]);
    walls.push(performance.now() - started);
  }
  return walls;
}

/**
 * The floor: bare `runc run` calls of the container kiln runs for a step
 * of the chain, with the config.json kiln's own spec builder writes for it
 * (seccomp, capabilities, mounts, namespaces), the rootfs `lower` as the
 * overlay kiln gives runc, a fresh upper dir for every run.
 */
async function kilnSpecFloor(dir: string, lower: string, runs: number, turn: number): Promise<number[]> {
  const bundle = path.join(dir, 'kiln-spec');
  await mkdir(path.join(bundle, 'rootfs'), { recursive: true });
  const hostsPath = path.join(bundle, 'hosts');
  const { meta, host } = await floorProcess();
  return timeRuncRuns(bundle, path.join(dir, 'runc-state'), runs, async (i) => {
    const spec = buildOciSpec({
      id: `kiln-bench-floor-${i}`,
      meta,
      rootPath: path.join(bundle, 'rootfs'),
      rootMounts: [await freshOverlay(dir, lower, `runc-${turn}-${i}`)],
      mounts: [],
      hostsPath,
      ...host,
    });
    await writeFile(hostsPath, hostsFile(spec.hostname, []));
    await writeFile(path.join(bundle, 'config.json'), ociJson(spec));
  });
}

/** The process of a floor run, and what kiln's executors take from the host for such a container. */
async function floorProcess(): Promise<{ meta: ProcessMeta; host: Awaited<ReturnType<typeof hostSpecOptions>> }> {
  const meta = plainProcessMeta(['/bin/true'], [DEFAULT_PATH_ENV, 'STEP=floor']);
  return { meta, host: await hostSpecOptions(await boundingCapabilities(), (await sandboxSeccomp()).filter, meta) };
}

/** An overlay of `lower` with a new empty upper, named `name` under `dir`. */
async function freshOverlay(dir: string, lower: string, name: string): Promise<Mount> {
  const layer = (part: string): string => path.join(dir, 'floor-layers', name, part);
  await mkdir(layer('upper'), { recursive: true });
  await mkdir(layer('work'), { recursive: true });
  return { type: 'overlay', lower: [lower], upper: { dir: layer('upper'), work: layer('work') } };
}

/**
 * For context: what containerd itself costs for such a container, with no
 * kiln around it. The calls kiln's containerd executor makes, made by a
 * bare client: create the container (kiln's spec, with a fresh overlay
 * as the root, which runc mounts), create its task, wait, start, the exit;
 * the task and the container record are deleted after the clock stops
 * (kiln goes on once the process exited, while its task is deleted). Like kiln,
 * every container is in one shim group, kept alive by a task that is
 * created first and never started, and the shim runs a sealed copy of runc
 * (when one can be made).
 */
async function containerdFloor(address: string, dir: string, lower: string, runs: number, turn: number, phases: Map<string, number[]>): Promise<number[]> {
  const client = await connectContainerd({ address, namespace: 'kiln-bench-floor' });
  const group = { [SHIM_GROUP_ANNOTATION]: `kiln-bench-floor-${process.pid}-${turn}` };
  const noIo = { stdin: '', stdout: '', stderr: '' };
  const hostsPath = path.join(dir, 'containerd-floor-hosts');
  const { meta, host } = await floorProcess();
  const specJson = (id: string, proc: ProcessMeta, rootMounts: readonly Mount[] = []): string => {
    const spec = buildOciSpec({ id, meta: proc, rootPath: 'rootfs', rootMounts, mounts: [], hostsPath, ...host, annotations: group });
    return ociJson(spec);
  };
  await writeFile(hostsPath, hostsFile('floor', []));
  const anchor = `floor-anchor-${process.pid}-${turn}`;
  const walls: number[] = [];
  const background: Promise<void>[] = [];
  const runc = new ShimRunc({ stateDir: dir, logger: undefined });
  const runcBinary = await runc.binary();
  const taskOptions = runcBinary === undefined ? {} : { runcBinary };
  try {
    await client.createContainer({ id: anchor, labels: {}, runtime: RUNTIME, specJson: specJson(anchor, plainProcessMeta(['/bin/true'])) });
    await client.createTask(anchor, [renderMount(await freshOverlay(dir, lower, `containerd-anchor-${turn}`))], noIo, taskOptions);
    for (let i = 0; i < runs; i++) {
      const id = `floor-${process.pid}-${turn}-${i}`;
      const rootfs = await freshOverlay(dir, lower, `containerd-${turn}-${i}`);
      const started = performance.now();
      let mark = started;
      const phase = (name: string): void => {
        const now = performance.now();
        phases.set(name, [...(phases.get(name) ?? []), now - mark]);
        mark = now;
      };
      // As kiln does: runc mounts the root in the container's mount namespace; the shim mounts nothing.
      await client.createContainer({ id, labels: {}, runtime: RUNTIME, specJson: specJson(id, meta, [rootfs]) });
      phase('CreateContainer');
      await client.createTask(id, [], noIo, taskOptions);
      phase('CreateTask (shim start, runc create)');
      const exited = client.wait({ containerId: id });
      await client.start({ containerId: id });
      phase('Start (runc start)');
      const code = await exited;
      phase('Wait (the process runs, exits)');
      walls.push(performance.now() - started);
      // As kiln does: the root went with the container's mount namespace, so the run is over; the task's delete goes on in the background.
      const deleteStarted = performance.now();
      const deleted = client.delete({ containerId: id }).then(() => {
        const name = 'Delete (runc delete, the shim\'s cleanup; not waited for)';
        phases.set(name, [...(phases.get(name) ?? []), performance.now() - deleteStarted]);
      });
      background.push(deleted.then(() => client.deleteContainer(id)));
      if (code !== 0) throw new Error(`the containerd floor's /bin/true exited with ${code}`);
    }
  } finally {
    await Promise.all(background);
    await client.delete({ containerId: anchor }).catch(() => {});
    await client.deleteContainer(anchor).catch(() => {});
    await runc.close();
    client.close();
  }
  return walls;
}

/** For context: the same runs with the config `runc spec` writes (args and terminal changed) on the rootfs `BUNDLE/rootfs`. */
async function runcSpecFloor(bundle: string, state: string, runs: number): Promise<number[]> {
  runc(['spec', '--bundle', bundle]);
  const configFile = path.join(bundle, 'config.json');
  const config = JSON.parse(await readFile(configFile, 'utf8')) as { process: { args: string[]; terminal: boolean } };
  config.process.args = ['/bin/true'];
  config.process.terminal = false;
  await writeFile(configFile, JSON.stringify(config));
  return timeRuncRuns(bundle, state, runs);
}

/** Throws unless nothing ran in the build. */
function checkAllCached(run: ProcessRun): void {
  const summary = summarizeProgress(run.stderr);
  if (summary.ran.length > 0 || summary.vertices === 0) {
    throw new Error(`the rebuild was not fully cached: ${summary.ran.length} of ${summary.vertices} vertices ran (${summary.ran.slice(0, 5).join(', ')})`);
  }
}

const seconds = (ms: number): number => ms / 1000;

/** One turn of the cold chains: the floor, the chain on the runc worker and on the containerd worker. */
interface ChainTurn {
  readonly floor: number[];
  readonly floorTotal: number;
  /** The same containers through containerd's API with no kiln around the calls (for context). */
  readonly ctdFloor: number[];
  readonly ctdFloorTotal: number;
  readonly cold: ProcessRun;
  readonly chain: { durations: number[]; span: number };
  /** The same chain with `network: none` (loopback only), for the cost of the sandbox network. */
  readonly noneChain: { durations: number[]; span: number };
  readonly ctdChain: { durations: number[]; span: number };
  /** The containerd chain's whole `kiln build` process, which ends by removing the anchor (and so the shim). */
  readonly ctdWallMs: number;
}

async function main(): Promise<void> {
  const profile = process.argv.includes('--profile');
  const parallelism = defaultParallelism();
  printHeader(`exec-chain: exec ops through runc on a busybox rootfs, whole-process \`kiln build\` (parallelism ${parallelism})`, { runsProcesses: true });
  await using dir = await tempDir('exec-chain');
  const base = await baseOps();
  const root = path.join(dir.path, 'root');
  const bundle = path.join(dir.path, 'bundle');
  const write = async (name: string, def: RawDefinition): Promise<string[]> => {
    const file = path.join(dir.path, `${name}.json`);
    await writeFile(file, JSON.stringify(def));
    return ['build', file, '--root', root, '--local', `tools=${TOOLS}`, '--progress', 'rawjson'];
  };
  const chainBuild = await write('chain', definition(base, chainOps(''), `step-${STEPS - 1}`));
  const steps = Array.from({ length: STEPS }, (_, i) => `step ${i}`);

  // The warm-up builds the base, and exports it as the floor's rootfs.
  await runKiln([...(await write('base', definition(base, {}, 'base'))), '--output', `type=local,dest=${path.join(bundle, 'rootfs')}`], dir.path);
  const plainFloor = await runcSpecFloor(bundle, path.join(dir.path, 'runc-state'), STEPS);
  const plainFloorTotal = sum(plainFloor);

  // Each turn: the floor, the cold chain on the runc worker, and the same
  // cold chain (new keys, so nothing is cached) on the containerd worker,
  // against a private containerd started for the bench. Each build is a
  // new kiln process, so each containerd chain starts its own shim.
  const containerd = await startContainerd();
  const turns: ChainTurn[] = [];
  /** Where a bare containerd run's time goes, call by call, over all turns (ms). */
  const ctdPhases = new Map<string, number[]>();
  try {
    for (let turn = 0; turn < ROUNDS; turn++) {
      const floor = await kilnSpecFloor(dir.path, path.join(bundle, 'rootfs'), STEPS, turn);
      const ctdFloor = await containerdFloor(containerd.address, dir.path, path.join(bundle, 'rootfs'), STEPS, turn, ctdPhases);
      const cold = await runKiln(turn === 0 ? chainBuild : await write(`chain-${turn}`, definition(base, chainOps(`turn${turn}-`), `step-${STEPS - 1}`)), dir.path);
      const noneCold = await runKiln(await write(`chain-none-${turn}`, definition(base, chainOps(`none${turn}-`, 'none'), `step-${STEPS - 1}`)), dir.path);
      const ctdBuild = await write(`chain-containerd-${turn}`, definition(base, chainOps(`containerd${turn}-`), `step-${STEPS - 1}`));
      const ctdCold = await runKiln([...ctdBuild, '--worker', 'containerd', '--containerd-address', containerd.address], dir.path);
      turns.push({ floor, floorTotal: sum(floor), ctdFloor, ctdFloorTotal: sum(ctdFloor), cold, chain: timesOf(cold, steps), noneChain: timesOf(noneCold, steps), ctdChain: timesOf(ctdCold, steps), ctdWallMs: ctdCold.wallMs });
    }
  } finally {
    await containerd.close();
  }

  const oneRun = await runKiln(await write('one', definition(base, { one: sleepOp('one', SLEEP_SECONDS) }, 'one')), dir.path);
  const one = timesOf(oneRun, ['one']);
  const fanRun = await runKiln(await write('fan', definition(base, fanOps(), 'fan')), dir.path);
  const fan = timesOf(fanRun, [...Array.from({ length: FAN }, (_, i) => `fan ${i}`), 'fan merge']);
  const waves = Math.ceil(FAN / parallelism);
  const ideal = waves * one.span;

  // Alternated with node's bare start, so both see the same load.
  const nodeFloor: number[] = [];
  const cached: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    nodeFloor.push((await runNode(['-e', ''], dir.path)).wallMs);
    const run = await runKiln(chainBuild, dir.path);
    checkAllCached(run);
    cached.push(run.wallMs);
  }

  // Per turn, and the turn whose ratio is the median, for the details.
  const chainRatios = turns.map((t) => t.chain.span / t.floorTotal);
  const ctdRatios = turns.map((t) => t.ctdChain.span / t.floorTotal);
  const medianTurn = (ratios: readonly number[]): ChainTurn => turns[ratios.indexOf(median(ratios))] ?? turns[0]!;
  const list = (values: readonly number[], digits: number, unit: string): string => values.map((v) => `${v.toFixed(digits)}${unit}`).join(', ');
  const r = medianTurn(chainRatios);
  const c = medianTurn(ctdRatios);
  console.log(`  cold chain: ${STEPS} x /bin/true, each on the previous one's rootfs; ${ROUNDS} turns of floor, runc chain, containerd chain`);
  console.log(`  runc floor: ${STEPS} bare \`runc run\` of kiln's config, per turn: ${list(turns.map((t) => seconds(t.floorTotal)), 3, ' s')}`);
  printContext('runc floor: median run (median turn)', median(r.floor), 'ms', 1);
  printContext(`\`runc spec\` config (no seccomp): ${STEPS} runs`, seconds(plainFloorTotal), 's');
  printContext('`runc spec` config: median run', median(plainFloor), 'ms', 1);
  console.log(`  kiln (runc worker): ${STEPS} steps / floor, per turn: ${list(chainRatios, 2, 'x')}; details of the median turn:`);
  printContext('kiln: whole process (base cached)', seconds(r.cold.wallMs), 's');
  printContext(`kiln: ${STEPS} steps, first start to last end`, seconds(r.chain.span), 's');
  printContext('kiln: first step (first exec)', r.chain.durations[0]!, 'ms', 1);
  printContext('kiln: median step', median(r.chain.durations), 'ms', 1);
  printContext('overhead: median step - median run', median(r.chain.durations) - median(r.floor), 'ms', 1);
  printContext(`overhead: (steps - floor) / ${STEPS}`, (r.chain.span - r.floorTotal) / STEPS, 'ms', 1);
  const chainOk = printFigure({ label: `${STEPS} steps / runc floor (median turn)`, value: median(chainRatios), target: TARGET_CHAIN_RATIO, unit: 'x', digits: 2 });
  // The sandbox network's cost per step: the chain's median step against the same chain's with network none, turn by turn.
  const networkCosts = turns.map((t) => median(t.chain.durations) - median(t.noneChain.durations));
  console.log(`  network: median step of the sandbox chain - of the none chain, per turn: ${list(networkCosts, 1, ' ms')}`);
  printContext('network sandbox: median step (median turn)', median(turns.map((t) => median(t.chain.durations))), 'ms', 1);
  printContext('network none: median step (median turn)', median(turns.map((t) => median(t.noneChain.durations))), 'ms', 1);
  printContext('network sandbox: first step (waits for the first namespace)', r.chain.durations[0]!, 'ms', 1);
  const networkOk = printFigure({ label: 'sandbox network cost per step (median turn)', value: median(networkCosts), target: TARGET_NETWORK_MS, unit: 'ms', digits: 1 });
  printContext(`${STEPS} steps / \`runc spec\` config runs`, r.chain.span / plainFloorTotal, 'x', 2);
  console.log(`  containerd worker (io.containerd.runc.v2 shim): ${STEPS} steps / floor, per turn: ${list(ctdRatios, 2, 'x')}; details of the median turn:`);
  printContext('containerd: whole process (base cached)', seconds(c.ctdWallMs), 's');
  printContext(`containerd: ${STEPS} steps, first start to last end`, seconds(c.ctdChain.span), 's');
  printContext('containerd: first step (starts the shim)', c.ctdChain.durations[0]!, 'ms', 1);
  printContext('containerd: median step', median(c.ctdChain.durations), 'ms', 1);
  printContext('containerd overhead: median step - median run', median(c.ctdChain.durations) - median(c.floor), 'ms', 1);
  printContext(`containerd / runc worker (${STEPS} steps)`, c.ctdChain.span / c.chain.span, 'x', 2);
  const bareRatios = turns.map((t) => t.ctdFloorTotal / t.floorTotal);
  console.log(`  bare containerd (kiln's calls, no kiln), ${STEPS} runs / runc floor, per turn: ${list(bareRatios, 2, 'x')}`);
  printContext('bare containerd / runc floor (median turn)', median(bareRatios), 'x', 2);
  printContext('bare containerd: median run (median turn)', median(c.ctdFloor), 'ms', 1);
  for (const [name, ms] of ctdPhases) printContext(`  bare containerd: ${name}, median`, median(ms), 'ms', 1);
  printContext('kiln on containerd: median step - bare median run', median(c.ctdChain.durations) - median(c.ctdFloor), 'ms', 1);
  const overBare = turns.map((t) => t.ctdChain.span / t.ctdFloorTotal);
  printContext(`kiln on containerd / bare containerd (${STEPS} steps, median turn)`, median(overBare), 'x', 2);
  const ctdOk = printFigure({ label: `containerd ${STEPS} steps / runc floor (median turn)`, value: median(ctdRatios), target: TARGET_CONTAINERD_RATIO, unit: 'x', digits: 2 });
  printContext(`containerd ${STEPS} steps / \`runc spec\` config runs`, c.ctdChain.span / plainFloorTotal, 'x', 2);
  // Issue 20: a step on the containerd worker against a step on the runc worker, the medians of the same turn's chains.
  const stepRatios = turns.map((t) => median(t.ctdChain.durations) / median(t.chain.durations));
  console.log(`  containerd worker median step / runc worker median step, per turn: ${list(stepRatios, 2, 'x')}`);
  const stepOk = printFigure({ label: 'containerd step / runc worker step (median turn)', value: median(stepRatios), target: TARGET_CONTAINERD_STEP_RATIO, unit: 'x', digits: 2 });

  // The 1-op build's op is its process's first exec, which pays one-time
  // costs the fan pays once for 16; the fan's own median op shows how much.
  const fanOp = median(fan.durations.slice(0, FAN));
  console.log(`  fan: ${FAN} x sleep ${SLEEP_SECONDS} on the base, merged; ideal = ceil(${FAN} / ${parallelism}) x one op`);
  printContext('one op: whole process (1-op build)', seconds(oneRun.wallMs), 's');
  printContext('one op: started to completed', seconds(one.span), 's');
  printContext('fan: whole process', seconds(fanRun.wallMs), 's');
  printContext('fan: first start to merge completed', seconds(fan.span), 's');
  printContext('fan: median op', seconds(fanOp), 's');
  printContext(`fan / (ceil(${FAN} / ${parallelism}) x fan's median op)`, fan.span / (waves * fanOp), 'x', 2);
  const fanOk = printFigure({ label: `fan / ideal (${seconds(ideal).toFixed(3)} s)`, value: fan.span / ideal, target: TARGET_FAN_RATIO, unit: 'x', digits: 2 });

  console.log(`  cached rebuild of the chain: ${cached.map((ms) => `${seconds(ms).toFixed(3)} s`).join(', ')}; all cached`);
  printContext(`node -e '' (median of ${RUNS})`, seconds(median(nodeFloor)), 's');
  const cachedOk = printFigure({ label: `cached rebuild, median of ${RUNS}`, value: seconds(median(cached)), target: TARGET_CACHED_SECONDS, unit: 's' });
  const overNodeOk = printFigure({ label: "cached rebuild - node -e '' (medians)", value: median(cached) - median(nodeFloor), target: TARGET_CACHED_OVER_NODE_MS, unit: 'ms', digits: 1 });

  if (profile) {
    console.log('  cold chain (a new one, none of its steps cached):');
    console.log(await profileKiln(await write('chain-profile', definition(base, chainOps('profile-'), `step-${STEPS - 1}`)), dir.path));
    console.log('  cached rebuild:');
    console.log(await profileKiln(chainBuild, dir.path));
  }
  printReproduce(`exec-chain.js${profile ? ' --profile' : ''}`);
  if (!chainOk || !networkOk || !ctdOk || !stepOk || !fanOk || !cachedOk || !overNodeOk) process.exitCode = 1;
}

await main();
