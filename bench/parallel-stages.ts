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
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { RawDefinition, RawOp } from '../src/llb/json-types.js';
import { defaultParallelism } from '../src/solver/solve.js';
import { baseOps, definition, sleepOp, timesOf, TOOLS } from './busybox.js';
import { median, printContext, printFigure, printHeader, printReproduce, runKiln, tempDir } from './harness.js';

const STAGES = 16;
const TURNS = 5;
const SLEEP = '1';
const TARGET_SPAN_SECONDS = 1.5;
const CAPPED = 4;

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
  await runKiln(await build('base', definition(base, {}, 'base')), dir.path);

  const spans: number[] = [];
  const walls: number[] = [];
  const floors: number[] = [];
  for (let turn = 0; turn < TURNS; turn++) {
    const one = `one${turn}-`;
    const oneRun = await runKiln(await build(`one-${turn}`, definition(base, stageOps(1, one), 'join')), dir.path);
    floors.push(timesOf(oneRun, names(1, one)).span);
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
  printContext(`${STAGES} stages: whole process (median)`, median(walls) / 1000, 's');
  printContext('1 stage: span (median)', median(floors) / 1000, 's');
  printContext(`${STAGES} stages / 1 stage (medians)`, median(spans) / median(floors), 'x', 2);
  printContext(`--parallelism ${CAPPED}: span (${Math.ceil(STAGES / CAPPED)} waves expected)`, cappedSpan / 1000, 's');
  const ok = printFigure({ label: `${STAGES} stages: span (median of ${TURNS})`, value: median(spans) / 1000, target: TARGET_SPAN_SECONDS, unit: 's' });
  printReproduce('parallel-stages.js');
  if (!ok) process.exitCode = 1;
}

await main();
