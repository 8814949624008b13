/**
 * Pulling and unpacking a 200 MB image from a local registry (Debian's
 * docker-registry on 127.0.0.1), against skopeo + umoci doing the same.
 *
 * The image: four layers of about 50 MB each (a mix of text-like and random
 * files of varied sizes in nested folders), built by kiln from four local
 * directories merged (one layer each) and pushed to the registry.
 *
 * Timed, alternately, RUNS times each, every run from nothing:
 * - kiln: a whole `kiln build` process of a definition whose result is the
 *   `docker-image://` source, on a fresh root: resolve, download every
 *   layer into the content store (verified), unpack them into snapshots.
 * - floor: `skopeo copy docker://... oci:DIR` then `umoci unpack --image
 *   DIR BUNDLE` on fresh directories, run one after the other.
 *
 * Target: kiln's median <= 1.2x the floor's median.
 */
import { spawnSync } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { startRegistry } from '../test/support/registry.js';
import { median, printContext, printFigure, printHeader, printReproduce, pushMixedImage, runKiln, tempDir } from './harness.js';

const LAYERS = 4;
const LAYER_BYTES = 50 * 1024 * 1024;
const RUNS = 3;
const TARGET_RATIO = 1.2;

function time(cmd: string, args: readonly string[]): number {
  const started = performance.now();
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  return performance.now() - started;
}

async function main(): Promise<void> {
  printHeader(`pull: pull + unpack of a ${(LAYERS * LAYER_BYTES) / 1024 / 1024} MiB, ${LAYERS}-layer image from a local registry`, { runsProcesses: true });
  await using work = await tempDir('pull');
  const registry = await startRegistry();
  try {
    const image = `${registry.host}/bench/pull:1`;
    // The image, built and pushed by kiln from four local directories merged.
    await pushMixedImage({ work: work.path, image, layers: LAYERS, layerBytes: LAYER_BYTES });

    const pullFile = path.join(work.path, 'pull.json');
    await writeFile(pullFile, JSON.stringify({ version: 1, ops: { image: { source: { identifier: `docker-image://${image}` } } }, result: 'image' }));

    const kilnMs: number[] = [];
    const floorMs: number[] = [];
    for (let run = 0; run < RUNS; run++) {
      const root = path.join(work.path, `root${run}`);
      kilnMs.push((await runKiln(['build', pullFile, '--root', root, '--insecure-registry', registry.host], work.path)).wallMs);
      await rm(root, { recursive: true, force: true });

      const layout = path.join(work.path, `oci${run}`);
      const bundle = path.join(work.path, `bundle${run}`);
      floorMs.push(
        time('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${image}`, `oci:${layout}:1`]) +
          time('umoci', ['unpack', '--image', `${layout}:1`, bundle]),
      );
      await rm(layout, { recursive: true, force: true });
      await rm(bundle, { recursive: true, force: true });
    }
    const kilnMedian = median(kilnMs) / 1000;
    const floorMedian = median(floorMs) / 1000;
    printContext('skopeo copy + umoci unpack (floor), median', floorMedian, 's');
    printContext('kiln build (pull + unpack), median', kilnMedian, 's');
    const ok = printFigure({ label: 'kiln / floor', value: kilnMedian / floorMedian, target: TARGET_RATIO, unit: 'x', digits: 2 });
    printReproduce('pull.js');
    if (!ok) process.exitCode = 1;
  } finally {
    await registry.stop();
  }
}

await main();
