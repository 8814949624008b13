/**
 * `--export-cache` to a local registry (Debian's docker-registry on
 * 127.0.0.1), against what it must not be slower than.
 *
 * 1. A 200 MiB layer (a local source) and a 20-step chain of file ops on
 *    it. Timed, alternately, RUNS times each, each from a fresh root and to
 *    a fresh repository: the image push (`-o type=image,push=true`: compress
 *    every layer, upload) — the floor — and the cache export
 *    (`--export-cache type=registry,mode=min`: compress, upload, records).
 *    The time of each is its export step as `--progress rawjson` reports it
 *    (the build before it is the same in both and is left out).
 *    Target: cache export <= 1.0x the push.
 * 2. A 100-vertex graph (a chain of 100 file ops, each adding a 128 KiB
 *    file): `mode=max` (100 records) against `mode=min` (one), the same way.
 *    Target: max <= 2.0x min.
 * 3. With `--rss` (or `--rss-only`; needs runc): a 1 GiB layer, written by
 *    an exec op on the busybox base (256 MiB from /dev/urandom, 768 MiB of
 *    `yes` text) so that the build itself holds no data in kiln's process,
 *    exported with `mode=max`, then built on a fresh root with
 *    `--import-cache`: the exec is a hit, so its layer is pulled and
 *    unpacked. Target: peak RSS of each kiln process <= 150 MiB.

 */
import { randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { startRegistry } from '../test/support/registry.js';
import { baseOps, definition, TOOLS } from './busybox.js';
import { median, printContext, printFigure, printHeader, printReproduce, runKiln, summarizeProgress, tempDir } from './harness.js';

const BIG_BYTES = 200 * 1024 * 1024;
const CHAIN = 20;
/** Vertices of the max/min graph (KILN_BENCH_GRAPH overrides, for a machine whose registry is slow per blob). */
const GRAPH = Number(process.env['KILN_BENCH_GRAPH'] ?? 100);
/** Runs of each timing (KILN_BENCH_RUNS overrides: one run on a slow machine still gives the ratios). */
const RUNS = Number(process.env['KILN_BENCH_RUNS'] ?? 3);
const RSS_BYTES = 1024 * 1024 * 1024;
const RSS_TARGET_MIB = 150;
const RSS = process.argv.includes('--rss') || process.argv.includes('--rss-only');
const TIMINGS = !process.argv.includes('--rss-only');

/** Writes about `bytes` of files under `dir`: 3/4 text-like, 1/4 random, 4 KiB to 1 MiB each. */
async function writeTree(dir: string, bytes: number): Promise<void> {
  let written = 0;
  let n = 0;
  const words = 'alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau\n';
  while (written < bytes) {
    const size = 4096 << (n % 9);
    const folder = path.join(dir, `d${n % 13}`, `e${n % 7}`);
    await mkdir(folder, { recursive: true });
    const body = n % 4 === 3 ? randomBytes(size) : Buffer.from(`${n}\n${words.repeat(Math.ceil(size / words.length))}`.slice(0, size));
    await writeFile(path.join(folder, `f${n}`), body);
    written += size;
    n++;
  }
}

/** A chain of `length` mkfile ops on `base` (a local source) or on scratch; each file `bytes` of text. */
function chain(length: number, bytes: number, base: string | undefined): object {
  const ops: Record<string, unknown> = {};
  if (base !== undefined) ops['big'] = { source: { identifier: `local://${base}` } };
  for (let i = 0; i < length; i++) {
    const below = i === 0 ? base === undefined ? undefined : 'big' : `c${i - 1}`;
    const data = `${i} `.repeat(Math.ceil(bytes / (String(i).length + 1))).slice(0, bytes);
    ops[`c${i}`] = {
      ...(below === undefined ? {} : { inputs: [below] }),
      file: { actions: [{ input: below === undefined ? -1 : 0, output: 0, mkfile: { path: `/f${i}`, mode: '0644', data } }] },
    };
  }
  return { version: 1, ops, result: `c${length - 1}` };
}

/** Seconds from the start to the completion of the export step named like `name`. */
function exportSeconds(stderr: string, name: RegExp): number {
  let started: number | undefined;
  let completed: number | undefined;
  for (const line of stderr.split('\n')) {
    if (!line.startsWith('{')) continue;
    const e = JSON.parse(line) as { type?: string; name?: string; started?: string; completed?: string; error?: string };
    if (e.type !== 'export' || !name.test(e.name ?? '')) continue;
    if (e.error !== undefined) throw new Error(`export ${e.name} failed: ${e.error}`);
    if (e.started !== undefined) started = Date.parse(e.started);
    if (e.completed !== undefined) completed = Date.parse(e.completed);
  }
  if (started === undefined || completed === undefined) throw new Error(`no completed export matching ${name}`);
  return (completed - started) / 1000;
}

async function main(): Promise<void> {
  const parts = [
    ...(TIMINGS ? [`cache-export: ${CHAIN}-step chain + ${BIG_BYTES / 1024 / 1024} MiB layer vs the image push; mode=max vs min of ${GRAPH} vertices`] : []),
    ...(RSS ? [`peak RSS of export and import of a ${RSS_BYTES / 1024 ** 3} GiB layer`] : []),
  ];
  printHeader(parts.join('; '), { runsProcesses: true });
  await using work = await tempDir('cache-export');
  const registry = await startRegistry();
  try {
    let ok = true;
    if (TIMINGS) ok = (await timings(work.path, registry.host)) && ok;
    if (RSS) ok = (await peakRss(work.path, registry.host)) && ok;
    printReproduce(`cache-export.js${RSS ? ' --rss' : ''}`);
    if (!ok) process.exitCode = 1;
  } finally {
    await registry.stop();
  }
}

let run = 0;
/** `kiln build` on a fresh root (removed after), with rawjson progress. */
async function build(work: string, file: string, flags: readonly string[]): Promise<{ readonly stderr: string; readonly peakRssBytes: number }> {
  const root = path.join(work, `root${run++}`);
  try {
    return await runKiln(['build', file, '--root', root, '--progress', 'rawjson', ...flags], work);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

async function timings(work: string, host: string): Promise<boolean> {
  const bigDir = path.join(work, 'big');
  await writeTree(bigDir, BIG_BYTES);
  const chainFile = path.join(work, 'chain.json');
  await writeFile(chainFile, JSON.stringify(chain(CHAIN, 4096, 'big')));
  const graphFile = path.join(work, 'graph.json');
  await writeFile(graphFile, JSON.stringify(chain(GRAPH, 128 * 1024, undefined)));

  const pushS: number[] = [];
  const cacheS: number[] = [];
  const maxS: number[] = [];
  const minS: number[] = [];
  const local = ['--local', `big=${bigDir}`];
  for (let i = 0; i < RUNS; i++) {
    const image = `${host}/bench/image-${i}:1`;
    pushS.push(exportSeconds((await build(work, chainFile, [...local, '--output', `type=image,name=${image},push=true,registry.insecure=true`])).stderr, /^image /));
    const ref = `${host}/bench/cache-${i}:c`;
    cacheS.push(exportSeconds((await build(work, chainFile, [...local, '--export-cache', `type=registry,ref=${ref},registry.insecure=true`])).stderr, /^cache /));
    console.log(`  run ${i + 1}: image push ${pushS.at(-1)?.toFixed(2)} s, cache export ${cacheS.at(-1)?.toFixed(2)} s`);
  }
  await rm(bigDir, { recursive: true, force: true });
  for (let i = 0; i < RUNS; i++) {
    maxS.push(exportSeconds((await build(work, graphFile, ['--export-cache', `type=registry,ref=${host}/bench/max-${i}:c,mode=max,registry.insecure=true`])).stderr, /^cache /));
    minS.push(exportSeconds((await build(work, graphFile, ['--export-cache', `type=registry,ref=${host}/bench/min-${i}:c,mode=min,registry.insecure=true`])).stderr, /^cache /));
    console.log(`  run ${i + 1}: mode=max ${maxS.at(-1)?.toFixed(2)} s, mode=min ${minS.at(-1)?.toFixed(2)} s`);
  }
  printContext('image push (floor), median', median(pushS), 's');
  printContext('cache export mode=min, median', median(cacheS), 's');
  const okExport = printFigure({ label: 'cache export / image push', value: median(cacheS) / median(pushS), target: 1, unit: 'x', digits: 2 });
  printContext(`mode=min of ${GRAPH} vertices (floor), median`, median(minS), 's');
  printContext(`mode=max of ${GRAPH} vertices, median`, median(maxS), 's');
  const okMax = printFigure({ label: 'mode=max / mode=min', value: median(maxS) / median(minS), target: 2, unit: 'x', digits: 2 });
  return okExport && okMax;
}

/** Peak RSS of the export of a 1 GiB layer, and of its import on a fresh root (the layer pulled and unpacked). */
async function peakRss(work: string, host: string): Promise<boolean> {
  const mib = RSS_BYTES / 1024 / 1024;
  const script = `head -c ${mib / 4}m /dev/urandom > /out/random && yes 'alpha beta gamma delta epsilon zeta eta theta' | head -c ${(mib * 3) / 4}m > /out/text`;
  const big = {
    inputs: ['base'],
    exec: {
      meta: { args: ['/bin/sh', '-c', script] },
      mounts: [
        { dest: '/', input: 0, output: -1, readonly: true },
        { dest: '/out', input: -1, output: 0 },
      ],
    },
  };
  const file = path.join(work, 'rss.json');
  await writeFile(file, JSON.stringify(definition(await baseOps(), { big }, 'big')));
  const ref = `${host}/bench/rss:c`;
  const local = ['--local', `tools=${TOOLS}`];
  const exported = await build(work, file, [...local, '--export-cache', `type=registry,ref=${ref},mode=max,registry.insecure=true`]);
  const exportS = exportSeconds(exported.stderr, /^cache /);
  const imported = await build(work, file, [...local, '--import-cache', `type=registry,ref=${ref},registry.insecure=true`]);
  // The exec must come from the import (its layer pulled and unpacked), not run again.
  const { ran } = summarizeProgress(imported.stderr);
  if (ran.length > 0) throw new Error(`the import build ran ${ran.join(', ')}: the cache did not hit`);
  printContext(`export of the ${mib} MiB layer (export step)`, exportS, 's', 2);
  const okExport = printFigure({ label: 'peak RSS, build + cache export', value: exported.peakRssBytes / 1024 ** 2, target: RSS_TARGET_MIB, unit: 'MiB', digits: 1 });
  const okImport = printFigure({ label: 'peak RSS, build from the import', value: imported.peakRssBytes / 1024 ** 2, target: RSS_TARGET_MIB, unit: 'MiB', digits: 1 });
  return okExport && okImport;
}

await main();
