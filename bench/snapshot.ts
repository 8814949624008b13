/**
 * The cost of one step of work on a snapshot, through the cache manager's
 * API: a new mutable ref on a parent, mounted, a small file written,
 * unmounted, committed. Measured on a 1 GB parent (1,000 files of 1 MiB) and
 * on an empty one, with the overlayfs and the native snapshotter. Target:
 * overlayfs <= 50 ms per cycle (median), and the same on both parents.
 * Native copies the parent on prepare, so on 1 GB it runs fewer cycles.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { createCacheManager } from '../src/cache/manager.js';
import type { CacheManager, ImmutableRef } from '../src/cache/types.js';
import { median, printContext, printHeader, printFigure, printReproduce, tempDir } from './harness.js';

const PARENT_FILES = 1000;
const FILE_BYTES = 1024 * 1024;
const CYCLES = 10;
/** Each native cycle on the 1 GB parent copies it whole. */
const NATIVE_LARGE_CYCLES = 3;
const TARGET_MS = 50;
/** "Independent of the parent's size", with room for timer noise. */
const TARGET_SIZE_RATIO = 1.5;

const PHASES = ['prepare', 'mount', 'write', 'unmount', 'commit'] as const;
type Phase = (typeof PHASES)[number];

/** Makes a committed ref holding `files` files of 1 MiB under /data. */
async function makeParent(cache: CacheManager, files: number): Promise<ImmutableRef> {
  const mutable = await cache.newMutable(null, { description: `bench parent, ${files} files` });
  try {
    const dir = await mutable.mount();
    try {
      await mkdir(path.join(dir.path, 'data'));
      for (let i = 0; i < files; i += 50) {
        const batch = Array.from({ length: Math.min(50, files - i) }, (_, j) => writeFile(path.join(dir.path, 'data', `blob-${i + j}`), randomBytes(FILE_BYTES)));
        await Promise.all(batch);
      }
    } finally {
      await dir.release();
    }
    return await mutable.commit();
  } catch (err) {
    await mutable.release();
    throw err;
  }
}

/** Runs `cycles` prepare+mount+write+unmount+commit cycles on `parent`; returns each phase's times (ms) and the totals. */
async function cycleTimes(cache: CacheManager, parent: ImmutableRef, cycles: number): Promise<{ totals: number[]; phases: Record<Phase, number[]> }> {
  const totals: number[] = [];
  const phases: Record<Phase, number[]> = { prepare: [], mount: [], write: [], unmount: [], commit: [] };
  for (let i = 0; i < cycles; i++) {
    const marks = [performance.now()];
    const mutable = await cache.newMutable(parent, { description: `bench cycle ${i}` });
    marks.push(performance.now());
    const dir = await mutable.mount();
    marks.push(performance.now());
    await writeFile(path.join(dir.path, `cycle-${i}`), `cycle ${i}\n`);
    marks.push(performance.now());
    await dir.release();
    marks.push(performance.now());
    const committed = await mutable.commit();
    marks.push(performance.now());
    await committed.release();
    PHASES.forEach((phase, p) => phases[phase].push(marks[p + 1]! - marks[p]!));
    totals.push(marks.at(-1)! - marks[0]!);
  }
  return { totals, phases };
}

function printPhases(parent: string, phases: Record<Phase, number[]>): void {
  console.log(`    ${parent}, median ms: ${PHASES.map((p) => `${p} ${median(phases[p]).toFixed(1)}`).join(', ')}`);
}

async function benchSnapshotter(name: 'overlayfs' | 'native'): Promise<boolean> {
  await using dir = await tempDir(`snapshot-${name}`);
  const cache = await createCacheManager({ root: path.join(dir.path, 'root'), snapshotter: name });
  try {
    const started = performance.now();
    const large = await makeParent(cache, PARENT_FILES);
    const largeSeconds = (performance.now() - started) / 1000;
    const empty = await makeParent(cache, 0);
    try {
      const largeCycles = name === 'native' ? NATIVE_LARGE_CYCLES : CYCLES;
      const onEmpty = await cycleTimes(cache, empty, CYCLES);
      const onLarge = await cycleTimes(cache, large, largeCycles);
      console.log(`${name}:`);
      printContext(`making the 1 GB parent (${PARENT_FILES} x 1 MiB)`, largeSeconds, 's');
      const emptyMs = median(onEmpty.totals);
      const largeMs = median(onLarge.totals);
      const emptyLabel = `cycle on empty parent, median of ${CYCLES}`;
      const largeLabel = `cycle on 1 GB parent, median of ${largeCycles}`;
      let ok = true;
      if (name === 'overlayfs') {
        ok = [
          printFigure({ label: emptyLabel, value: emptyMs, target: TARGET_MS, unit: 'ms', digits: 1 }),
          printFigure({ label: largeLabel, value: largeMs, target: TARGET_MS, unit: 'ms', digits: 1 }),
          printFigure({ label: '1 GB parent / empty parent', value: largeMs / emptyMs, target: TARGET_SIZE_RATIO, unit: 'x', digits: 2 }),
        ].every(Boolean);
      } else {
        // Native copies the parent on prepare: no target, the figures are there to compare with overlayfs.
        printContext(emptyLabel, emptyMs, 'ms', 1);
        printContext(largeLabel, largeMs, 'ms', 1);
      }
      printPhases('empty parent', onEmpty.phases);
      printPhases('1 GB parent', onLarge.phases);
      return ok;
    } finally {
      await empty.release();
      await large.release();
    }
  } finally {
    await cache.close();
  }
}

async function main(): Promise<void> {
  printHeader('snapshot: newMutable(parent) + mount + write a small file + unmount + commit, through the cache manager', { runsProcesses: false });
  const overlayOk = await benchSnapshotter('overlayfs');
  await benchSnapshotter('native');
  printReproduce('snapshot.js');
  if (!overlayOk) process.exitCode = 1;
}

await main();
