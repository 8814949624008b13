/**
 * What an exec op's commit pays to leave overlayfs's unchanged copies out of
 * its layer (src/ops/exec/unchanged.ts), on the upper of a step that
 * installs a package set: 20,000 new files in 200 directories that the
 * layers below already have (3 lower layers, 100 entries each), plus 200
 * files copied up unchanged (pruned) and 200 changed ones (kept). The floor,
 * measured in the same run: listing every directory the prune must list (the
 * upper's and the lower ones at the same paths), which no way of finding the
 * copies can avoid. Target: the prune within 3x the floor.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { LayeredTree } from '../src/fs/layered-tree.js';
import { dropUnchangedCopies } from '../src/ops/exec/unchanged.js';
import { median, printContext, printFigure, printHeader, printReproduce, tempDir } from './harness.js';

const DIRS = 200;
const NEW_PER_DIR = 100;
const LOWER_LAYERS = 3;
const LOWER_PER_DIR = 100;
const RUNS = 5;
const TARGET_RATIO = 3;

/** Lower layers, and a pristine upper to copy for each run. */
function makeTrees(root: string): { lowers: string[]; pristine: string } {
  const lowers = Array.from({ length: LOWER_LAYERS }, (_, i) => path.join(root, `lower${i}`));
  const pristine = path.join(root, 'pristine');
  for (let d = 0; d < DIRS; d++) {
    const rel = path.join('usr', 'lib', `pkg${d}`);
    for (const [i, lower] of lowers.entries()) {
      mkdirSync(path.join(lower, rel), { recursive: true });
      for (let f = 0; f < LOWER_PER_DIR; f++) writeFileSync(path.join(lower, rel, `l${i}-${f}`), `lower ${i} ${f}\n`);
    }
    mkdirSync(path.join(pristine, rel), { recursive: true });
    for (let f = 0; f < NEW_PER_DIR; f++) writeFileSync(path.join(pristine, rel, `new${f}`), `new ${f}\n`);
    writeFileSync(path.join(pristine, rel, 'l0-1'), 'changed\n');
  }
  return { lowers, pristine };
}

/** Milliseconds to list each directory of `upper` and the lower ones at the same paths. */
function timeListing(upper: string, lowers: readonly string[]): number {
  const started = performance.now();
  const walk = (rel: string): void => {
    for (const lower of lowers) readdirSync(path.join(lower, rel));
    for (const entry of readdirSync(path.join(upper, rel), { withFileTypes: true })) if (entry.isDirectory()) walk(path.join(rel, entry.name));
  };
  walk('');
  return performance.now() - started;
}

async function main(): Promise<void> {
  printHeader(`prune-upper: ${DIRS * NEW_PER_DIR} new files over ${LOWER_LAYERS} lower layers, against listing the directories`, { runsProcesses: false });
  await using dir = await tempDir('prune-upper');
  const { lowers, pristine } = makeTrees(dir.path);
  const floor: number[] = [];
  const prune: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const upper = path.join(dir.path, `upper${run}`);
    // Every run prunes the same upper; `cp -a` copies up as overlayfs does (same bytes, mode, owner, times to the ns).
    execFileSync('cp', ['-a', pristine, upper]);
    for (let d = 0; d < DIRS; d++) {
      const rel = path.join('usr', 'lib', `pkg${d}`);
      execFileSync('cp', ['-a', path.join(lowers[0]!, rel, 'l0-0'), path.join(upper, rel, 'l0-0')]);
    }
    floor.push(timeListing(upper, lowers));
    const started = performance.now();
    await dropUnchangedCopies(LayeredTree.ofOverlay({ lower: [...lowers].reverse(), upper: { dir: upper } }));
    prune.push(performance.now() - started);
    const left = readdirSync(path.join(upper, 'usr', 'lib', 'pkg0')).length;
    if (left !== NEW_PER_DIR + 1) throw new Error(`the prune left ${left} entries in a directory, not ${NEW_PER_DIR + 1}`);
    await rm(upper, { recursive: true });
  }
  const floorMs = median(floor);
  const pruneMs = median(prune);
  printContext(`floor: listing the directories, median of ${RUNS}`, floorMs, 'ms', 1);
  printContext(`kiln dropUnchangedCopies, median of ${RUNS}`, pruneMs, 'ms', 1);
  const met = printFigure({ label: 'prune time / floor time', value: pruneMs / floorMs, target: TARGET_RATIO, unit: 'x', digits: 2 });
  printReproduce('prune-upper.js');
  if (!met) process.exitCode = 1;
}

await main();
