/**
 * Disk: what kiln's root holds after a day's typical builds, against what it
 * must hold (issue 20, target 8).
 *
 * The workload, on one fresh root:
 * 1. three `kiln build` processes pull the same two-layer image (2 x 40 MiB
 *    of mixed files, pushed to a local registry beforehand) at once;
 * 2. a build FROM that image copies a 30 MiB local context into `/app` and
 *    exports an OCI tarball; then the same build again (all cached).
 *
 * What the root must hold, at least: every blob of the exported image (the
 * pulled layers as compressed blobs, the new layer's blob, config and
 * manifest), each pulled layer unpacked once, the context once as the local
 * source's snapshot and once as the copy's layer. The figure is `du -sb` of
 * the root over that sum; target <= 1.2.
 */
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { startRegistry } from '../test/support/registry.js';
import { duBytes, KILN_BIN, printContext, printFigure, printHeader, printReproduce, pushMixedImage, runKiln, tempDir, writeMixedTree } from './harness.js';

const MIB = 1024 * 1024;
const LAYERS = 2;
const LAYER_BYTES = 40 * MIB;
const CONTEXT_BYTES = 30 * MIB;
const PULLERS = 3;
const TARGET_RATIO = 1.2;

/** The sizes of the blobs in an OCI tarball (`blobs/sha256/*`), from `tar -tv`. */
function tarBlobBytes(file: string): number {
  const r = spawnSync('tar', ['-tvf', file], { encoding: 'utf8', maxBuffer: 64 * MIB });
  if (r.status !== 0) throw new Error(`tar -tvf ${file}: ${r.stderr}`);
  let total = 0;
  for (const line of r.stdout.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields.length >= 6 && (fields.at(-1) ?? '').startsWith('blobs/sha256/')) total += Number(fields[2]);
  }
  return total;
}

/** Runs `kiln ARGS` as a child that overlaps with others; rejects with its stderr on failure. */
async function kilnConcurrently(args: readonly string[]): Promise<void> {
  const child = spawn(process.execPath, [KILN_BIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`kiln ${args.join(' ')} exited with ${String(code)}:\n${stderr.slice(-4000)}`);
}

async function main(): Promise<void> {
  printHeader(`disk: kiln's root after ${PULLERS} concurrent pulls of a ${(LAYERS * LAYER_BYTES) / MIB} MiB image and a COPY of a ${CONTEXT_BYTES / MIB} MiB context`, { runsProcesses: true });
  await using work = await tempDir('disk');
  const registry = await startRegistry();
  try {
    const image = `${registry.host}/bench/disk:1`;
    const layerBytes = await pushMixedImage({ work: work.path, image, layers: LAYERS, layerBytes: LAYER_BYTES });

    const context = path.join(work.path, 'context');
    await writeMixedTree(context, CONTEXT_BYTES, 99);
    const contextBytes = duBytes(context);

    const root = path.join(work.path, 'root');
    const pullFile = path.join(work.path, 'pull.json');
    await writeFile(pullFile, JSON.stringify({ version: 1, ops: { image: { source: { identifier: `docker-image://${image}` } } }, result: 'image' }));
    await Promise.all(Array.from({ length: PULLERS }, () => kilnConcurrently(['build', pullFile, '--root', root, '--insecure-registry', registry.host])));

    const appFile = path.join(work.path, 'app.json');
    await writeFile(
      appFile,
      JSON.stringify({
        version: 1,
        ops: {
          base: { source: { identifier: `docker-image://${image}` } },
          ctx: { source: { identifier: 'local://ctx' } },
          app: { inputs: ['base', 'ctx'], file: { actions: [{ input: 0, secondaryInput: 1, output: 0, copy: { src: '/', dest: '/app', createDestPath: true, dirCopyContents: true } }] } },
        },
        result: 'app',
      }),
    );
    const tarball = path.join(work.path, 'app.tar');
    for (let run = 0; run < 2; run++) {
      await runKiln(['build', appFile, '--root', root, '--insecure-registry', registry.host, '--local', `ctx=${context}`, '--output', `type=oci,dest=${tarball}`], work.path);
    }

    const blobs = tarBlobBytes(tarball);
    const mustHold = blobs + layerBytes + 2 * contextBytes;
    const rootBytes = duBytes(root);
    printContext('image blobs (pulled + new layer, config)', blobs / 1e6, 'MB', 1);
    printContext('image layers unpacked once', layerBytes / 1e6, 'MB', 1);
    printContext('context: local snapshot + copy layer', (2 * contextBytes) / 1e6, 'MB', 1);
    printContext('must hold (floor)', mustHold / 1e6, 'MB', 1);
    for (const part of ['snapshots', 'content', 'store']) printContext(`  root/${part}`, duBytes(path.join(root, part)) / 1e6, 'MB', 1);
    printContext('du -sb of the root', rootBytes / 1e6, 'MB', 1);
    const ok = printFigure({ label: 'root / must hold', value: rootBytes / mustHold, target: TARGET_RATIO, unit: 'x', digits: 2 });
    printReproduce('disk.js');
    if (!ok) process.exitCode = 1;
  } finally {
    await registry.stop();
  }
}

await main();
