/**
 * Graphs thousands of ops deep: loading a 100,000-op chain, the cost of one
 * cold file op at depth 10, 1,000 (and with --deep, 10,000), and the cached
 * rebuild of the whole chain. Targets: the load takes a few seconds; an op
 * costs no more deep in the chain than near its bottom; a cached rebuild
 * costs what its op count predicts.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { loadDefinition } from '../src/llb/load.js';
import { Session, solve } from '../src/index.js';
import type { Definition } from '../src/llb/types.js';
import { loadedFileChain, rawFileChain } from '../test/support/file-chain.js';
import { median, printContext, printFigure, printHeader, printReproduce, tempDir } from './harness.js';

const LOAD_DEPTH = 100_000;
const LOAD_TARGET_S = 5;
/** Ops timed at each depth (their median is the figure). */
const WINDOW = 10;
const DEPTHS = process.argv.includes('--deep') ? [10, 1_000, 10_000] : [10, 1_000];
/** "Flat with depth", with room for a loaded machine's drift. */
const DEPTH_RATIO_TARGET = 1.5;
const CACHED_RATIO_TARGET = 1.5;

/** The loader on the JSON text of a 100,000-op chain, against JSON.parse of that text. */
function measureLoad(): boolean {
  const text = JSON.stringify(rawFileChain(LOAD_DEPTH));
  const parseStart = performance.now();
  const json: unknown = JSON.parse(text);
  const parseMs = performance.now() - parseStart;
  printContext(`JSON.parse of ${LOAD_DEPTH.toLocaleString('en')} ops (floor)`, parseMs / 1000, 's');
  const started = performance.now();
  try {
    loadDefinition(json);
  } catch (err) {
    console.log(`  load of ${LOAD_DEPTH.toLocaleString('en')} ops FAILED after ${((performance.now() - started) / 1000).toFixed(1)} s: ${err instanceof Error ? err.message : String(err)}`);
    return false;
  }
  const loadMs = performance.now() - started;
  printContext('load / parse', loadMs / parseMs, 'x', 1);
  return printFigure({ label: `load + validate ${LOAD_DEPTH.toLocaleString('en')} ops`, value: loadMs / 1000, target: LOAD_TARGET_S, unit: 's' });
}

/**
 * What any file op costs at least on overlayfs: mount a stack, write a
 * file, unmount (two processes, as kiln spawns them). Median of `n`.
 */
function bareOverlayCycle(dir: string, n: number): number {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const started = performance.now();
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', 'lowerdir=l1:l0,upperdir=up,workdir=work', 'mnt'], { cwd: dir });
    execFileSync('sh', ['-c', `echo ${i} > mnt/f${i}`], { cwd: dir });
    execFileSync('umount', ['mnt'], { cwd: dir });
    times.push(performance.now() - started);
  }
  return median(times);
}

/** Per-op durations (ms) of the ops that ran in a solve, by op digest. */
async function solveTimed(session: Session, definition: Definition): Promise<Map<string, number>> {
  const started = new Map<string, number>();
  const took = new Map<string, number>();
  const result = await solve(session, definition, {
    progress: {
      emit: (e) => {
        if (e.type !== 'vertex' || e.cached || e.started === undefined) return;
        if (e.completed === undefined) started.set(e.digest, Date.parse(e.started));
        else took.set(e.digest, Date.parse(e.completed) - (started.get(e.digest) ?? Date.parse(e.started)));
      },
    },
  });
  await result.release();
  return took;
}

async function main(): Promise<void> {
  printHeader('deep-graph: chains of file ops thousands deep', { runsProcesses: false });
  let ok = measureLoad();

  await using tmp = await tempDir('deep-graph');
  const bare = path.join(tmp.path, 'bare');
  for (const sub of ['l0', 'l1', 'up', 'work', 'mnt']) await mkdir(path.join(bare, sub), { recursive: true });
  await writeFile(path.join(bare, 'l0', 'base'), 'base');
  const root = path.join(tmp.path, 'root');
  const deepest = DEPTHS.at(-1) as number;
  const chain = loadedFileChain(deepest + WINDOW);
  // Prefixes of one chain: the ops below a window are cached from the last one.
  const prefix = (depth: number): Definition => ({ ...chain, result: { op: `f${depth - 1}`, output: 0 } });

  const perOp = new Map<number, number>();
  let coldTotalMs = 0;
  {
    await using session = await Session.open({ root, snapshotter: 'overlayfs' });
    for (const depth of DEPTHS) {
      const floor = bareOverlayCycle(bare, WINDOW);
      const started = performance.now();
      const took = await solveTimed(session, prefix(depth + WINDOW));
      coldTotalMs += performance.now() - started;
      const window = Array.from({ length: WINDOW }, (_, i) => took.get(chain.ops.get(`f${depth + i}`)?.digest ?? '') ?? NaN);
      perOp.set(depth, median(window));
      printContext(`cold op at depth ${depth.toLocaleString('en')} (median of ${WINDOW})`, median(window), 'ms', 1);
      printContext(`  bare mount + write + umount, just before`, floor, 'ms', 1);
      printContext(`  op / bare cycle`, median(window) / floor, 'x', 2);
    }
  }
  printContext(`cold build of ${(deepest + WINDOW).toLocaleString('en')} ops, mean per op`, coldTotalMs / (deepest + WINDOW), 'ms', 1);
  ok =
    printFigure({
      label: `cold op, depth ${deepest.toLocaleString('en')} / depth 10`,
      value: (perOp.get(deepest) as number) / (perOp.get(10) as number),
      target: DEPTH_RATIO_TARGET,
      unit: 'x',
      digits: 2,
    }) && ok;

  // Cached rebuilds, in a new session each time (nothing in memory from the cold build).
  const cached = async (depth: number): Promise<number> => {
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      await using session = await Session.open({ root, snapshotter: 'overlayfs' });
      const started = performance.now();
      const took = await solveTimed(session, prefix(depth));
      times.push(performance.now() - started);
      if (took.size > 0) throw new Error(`a cached rebuild of ${depth} ops ran ${took.size} of them`);
    }
    return median(times);
  };
  const short = Math.max(10, Math.floor((deepest + WINDOW) / 10));
  const shortMs = await cached(short);
  const longMs = await cached(deepest + WINDOW);
  const predicted = (shortMs / short) * (deepest + WINDOW);
  printContext(`cached rebuild of ${short.toLocaleString('en')} ops (median of 3)`, shortMs, 'ms', 0);
  printContext(`cached rebuild of ${(deepest + WINDOW).toLocaleString('en')} ops (median of 3)`, longMs, 'ms', 0);
  printContext(`  predicted from the ${short.toLocaleString('en')}-op rebuild (floor)`, predicted, 'ms', 0);
  ok = printFigure({ label: 'cached rebuild / predicted', value: longMs / predicted, target: CACHED_RATIO_TARGET, unit: 'x', digits: 2 }) && ok;
  printReproduce(`deep-graph.js${process.argv.includes('--deep') ? ' --deep' : ''}`);
  if (!ok) process.exitCode = 1;
}

await main();
