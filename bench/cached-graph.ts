/**
 * A fully cached rebuild of a 1,000-op graph, as a whole `kiln build`
 * process: what a user waits for when nothing changed. The graph is a chain
 * of 100 mkfile ops (each on the previous) and 900 independent ops on
 * scratch (mkfile or mkdir), merged by one op. Targets: median wall time of
 * 5 cached runs <= 0.6 s and peak RSS <= 200 MB. The bare `node -e ''` start
 * is printed too, as the floor no node CLI gets under.
 *
 * `--profile` also runs one cached rebuild under `node --cpu-prof` and prints
 * where its CPU time goes.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { RawDefinition, RawOp } from '../src/llb/json-types.js';
import { profileKiln } from './cpu-profile.js';
import { median, megabytes, printContext, printFigure, printHeader, printReproduce, type ProcessRun, runKiln, runNode, summarizeProgress, tempDir } from './harness.js';

const CHAIN = 100;
const FAN = 900;
const RUNS = 5;
const TARGET_SECONDS = 0.6;
const TARGET_RSS_MB = 200;

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

  const runs: ProcessRun[] = [];
  let reported = 0;
  for (let i = 0; i < RUNS; i++) {
    const run = await runKiln(build, dir.path);
    reported = checkAllCached(run);
    runs.push(run);
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

  if (profile) console.log(await profileKiln(build, dir.path));
  printReproduce(`cached-graph.js${profile ? ' --profile' : ''}`);
  if (!wallOk || !rssOk) process.exitCode = 1;
}

await main();
