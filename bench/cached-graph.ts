/**
 * A fully cached rebuild of a 1,000-op graph, as a whole `kiln build`
 * process: what a user waits for when nothing changed. The graph is a chain
 * of 100 mkfile ops (each on the previous) and 900 independent ops on
 * scratch (mkfile or mkdir), merged by one op. Targets: median wall time of
 * 5 cached runs <= 0.6 s and peak RSS <= 200 MB. The bare `node -e ''` start
 * is printed too, as the floor no node CLI gets under.
 *
 * The same graph as a binary pb.Definition (what `buildctl build` reads) is
 * rebuilt the same way, and its load (decode, then the loader) is timed in
 * this process against the JSON load: the pb path must be no slower.
 *
 * `--profile` also runs one cached rebuild under `node --cpu-prof` and prints
 * where its CPU time goes.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import path from 'node:path';
import { definitionToPb, parseAnyDefinition } from '../src/llb/formats.js';
import type { RawDefinition, RawOp } from '../src/llb/json-types.js';
import { profileKiln } from './cpu-profile.js';
import { median, megabytes, printContext, printFigure, printHeader, printReproduce, type ProcessRun, runKiln, runNode, summarizeProgress, tempDir } from './harness.js';

const CHAIN = 100;
const FAN = 900;
const RUNS = 5;
const TARGET_SECONDS = 0.6;
const TARGET_RSS_MB = 200;
const LOAD_RUNS = 30;
/** Whole-process runs differ by a few percent from run to run; the pb rebuild may be this much over the JSON one. */
const PROCESS_NOISE = 1.05;

/** Median milliseconds to load `bytes` (any form) into a Definition, after two warm-up loads. */
function loadMs(bytes: Uint8Array): number {
  const times: number[] = [];
  for (let i = 0; i < LOAD_RUNS + 2; i++) {
    const start = performance.now();
    parseAnyDefinition(bytes);
    if (i >= 2) times.push(performance.now() - start);
  }
  return median(times);
}

/** The benchmark graph: `chain-0..99`, `fan-0..899`, and `all` merging the chain's end with the fan. */
function graph(): RawDefinition {
  const ops: Record<string, RawOp> = {};
  for (let i = 0; i < CHAIN; i++) {
    ops[`chain-${i}`] = {
      ...(i === 0 ? {} : { inputs: [`chain-${i - 1}`] }),
      file: { actions: [{ input: i === 0 ? -1 : 0, output: 0, mkfile: { path: `/chain-${i}`, mode: '0644', data: `link ${i}\n` } }] },
    };
  }
  for (let i = 0; i < FAN; i++) {
    const action =
      i % 2 === 0
        ? { input: -1, output: 0, mkfile: { path: `/fan-${i}`, mode: '0644', data: `fan ${i}\n` } }
        : { input: -1, output: 0, mkdir: { path: `/fan-${i}`, mode: '0755' } };
    ops[`fan-${i}`] = { file: { actions: [action] } };
  }
  const inputs = [`chain-${CHAIN - 1}`, ...Array.from({ length: FAN }, (_, i) => `fan-${i}`)];
  ops['all'] = { inputs, merge: { inputs: inputs.map((_, i) => i) } };
  return { version: 1, ops, result: 'all' };
}

/** Throws unless the run's progress says nothing ran; returns how many vertices it reported. */
function checkAllCached(run: ProcessRun): number {
  const summary = summarizeProgress(run.stderr);
  if (summary.ran.length > 0 || summary.vertices === 0) {
    throw new Error(`the rebuild was not fully cached: ${summary.ran.length} of ${summary.vertices} vertices ran (${summary.ran.slice(0, 5).join(', ')})`);
  }
  return summary.vertices;
}

async function main(): Promise<void> {
  const profile = process.argv.includes('--profile');
  await using dir = await tempDir('cached-graph');
  const file = path.join(dir.path, 'graph.json');
  const root = path.join(dir.path, 'root');
  await writeFile(file, JSON.stringify(graph()));
  const build = ['build', file, '--root', root, '--progress', 'rawjson'];

  printHeader(`cached-graph: ${CHAIN + FAN + 1} ops (chain of ${CHAIN}, fan of ${FAN}, one merge), whole-process \`kiln build\``, { runsProcesses: true });

  const floor: number[] = [];
  for (let i = 0; i < RUNS; i++) floor.push((await runNode(['-e', ''], dir.path)).wallMs);

  const cold = await runKiln(build, dir.path);
  const coldSummary = summarizeProgress(cold.stderr);

  // The same graph as a pb.Definition: the same ops, so the same cache keys;
  // its rebuilds alternate with the JSON ones, so a change in the machine's load hits both alike.
  const pbFile = path.join(dir.path, 'graph.pb');
  const pb = definitionToPb(graph());
  await writeFile(pbFile, pb);
  const runs: ProcessRun[] = [];
  const pbRuns: ProcessRun[] = [];
  let reported = 0;
  for (let i = 0; i < RUNS; i++) {
    const run = await runKiln(build, dir.path);
    reported = checkAllCached(run);
    runs.push(run);
    const pbRun = await runKiln(['build', pbFile, '--root', root, '--progress', 'rawjson'], dir.path);
    checkAllCached(pbRun);
    pbRuns.push(pbRun);
  }
  const walls = runs.map((r) => r.wallMs / 1000);
  const peakRss = Math.max(...runs.map((r) => r.peakRssBytes));

  printContext(`node -e '' (median of ${RUNS})`, median(floor) / 1000, 's');
  printContext(`cold build (${coldSummary.vertices - coldSummary.cached} of ${coldSummary.vertices} ran)`, cold.wallMs / 1000, 's');
  printContext('cold build peak RSS', megabytes(cold.peakRssBytes), 'MB', 1);
  console.log(`  cached rebuilds: ${walls.map((w) => `${w.toFixed(3)} s`).join(', ')}; progress reported ${reported} vertices, all cached`);
  const wallOk = printFigure({ label: `cached rebuild, median of ${RUNS}`, value: median(walls), target: TARGET_SECONDS, unit: 's' });
  const rssOk = printFigure({ label: `cached rebuild peak RSS, max of ${RUNS}`, value: megabytes(peakRss), target: TARGET_RSS_MB, unit: 'MB', digits: 1 });
  printContext('above the node floor (median)', median(walls) - median(floor) / 1000, 's');

  const pbWalls = pbRuns.map((r) => r.wallMs / 1000);
  console.log(`  pb cached rebuilds: ${pbWalls.map((w) => `${w.toFixed(3)} s`).join(', ')} (${pb.length} bytes vs ${(await readFile(file)).length} bytes of JSON)`);
  const pbWallOk = printFigure({ label: `pb cached rebuild, median (JSON x${PROCESS_NOISE})`, value: median(pbWalls), target: median(walls) * PROCESS_NOISE, unit: 's' });
  const jsonLoad = loadMs(new Uint8Array(await readFile(file)));
  const pbLoad = loadMs(pb);
  printContext(`JSON load in process, median of ${LOAD_RUNS}`, jsonLoad, 'ms', 2);
  const pbLoadOk = printFigure({ label: `pb load in process (target: JSON load)`, value: pbLoad, target: jsonLoad, unit: 'ms', digits: 2 });

  if (profile) console.log(await profileKiln(build, dir.path));
  printReproduce(`cached-graph.js${profile ? ' --profile' : ''}`);
  if (!wallOk || !rssOk || !pbWallOk || !pbLoadOk) process.exitCode = 1;
}

await main();
