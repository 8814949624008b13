/**
 * What the benches share: temp dirs, running a whole process while measuring
 * its wall time and peak RSS, medians, and the lines each bench prints (the
 * figure, its target, the ratio, and the command that reproduces it).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

/** The kiln command of this checkout (benches run from `dist/bench/`). */
export const KILN_BIN = fileURLToPath(new URL('../../bin/kiln.js', import.meta.url));

/** GNU time (Debian package `time`); the shell's `time` keyword cannot report memory. */
const GNU_TIME = '/usr/bin/time';

/**
 * Without GNU time, the measured process records its own peak RSS on exit:
 * getrusage's ru_maxrss covers the whole node process, only not the few
 * milliseconds after the 'exit' handlers run.
 */
const RSS_HOOK = `data:text/javascript,${encodeURIComponent(
  "import{writeFileSync}from'node:fs';process.on('exit',()=>writeFileSync(process.env.KILN_BENCH_RSS_FILE,String(process.resourceUsage().maxRSS)));",
)}`;

/** A temp directory removed (with everything in it) on dispose. */
export interface TempDir extends AsyncDisposable {
  readonly path: string;
}

/** Makes `$TMPDIR/kiln-bench-NAME-XXXXXX`. */
export async function tempDir(name: string): Promise<TempDir> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `kiln-bench-${name}-`));
  return { path: dir, [Symbol.asyncDispose]: () => rm(dir, { recursive: true, force: true }) };
}

/** How peak RSS is measured: GNU time, unless absent or `KILN_BENCH_RSS=hook`. */
export function rssMethod(): 'gnu-time' | 'hook' {
  return process.env['KILN_BENCH_RSS'] !== 'hook' && existsSync(GNU_TIME) ? 'gnu-time' : 'hook';
}

/**
 * Prints the bench's title and what its figures depend on: node, the CPUs,
 * the load when it started (other work on the machine inflates every
 * figure), and, for benches that run processes, how peak RSS is measured.
 */
export function printHeader(title: string, options: { readonly runsProcesses: boolean }): void {
  const [load1] = os.loadavg();
  const rss =
    rssMethod() === 'gnu-time'
      ? `; peak RSS from ${GNU_TIME} (ru_maxrss of the node process)`
      : "; peak RSS from process.resourceUsage().maxRSS in the process's exit handler (KILN_BENCH_RSS=hook, or no GNU time)";
  console.log(title);
  console.log(`  node ${process.version}, ${os.availableParallelism()} CPUs, load average ${load1?.toFixed(2)} at start${options.runsProcesses ? rss : ''}`);
}

/** One measured run of a whole process. */
export interface ProcessRun {
  readonly wallMs: number;
  readonly peakRssBytes: number;
  readonly stderr: string;
}

/**
 * Runs `node NODE_ARGS...` to completion (stdout dropped, stderr kept) and
 * measures it from spawn to exit. Runs must not overlap in one `scratch` dir.
 * Throws, with the process's stderr, if it fails: a bench of a failed build
 * is no measurement.
 */
export async function runNode(nodeArgs: readonly string[], scratch: string): Promise<ProcessRun> {
  const rssFile = path.join(scratch, 'peak-rss');
  const method = rssMethod();
  const [cmd, args] =
    method === 'gnu-time'
      ? [GNU_TIME, ['-f', '%M', '-o', rssFile, process.execPath, ...nodeArgs]]
      : [process.execPath, ['--import', RSS_HOOK, ...nodeArgs]];
  const started = performance.now();
  const child = spawnSync(cmd, args, {
    encoding: 'utf8',
    stdio: ['ignore', 'ignore', 'pipe'],
    maxBuffer: 256 * 1024 * 1024,
    env: { ...process.env, KILN_BENCH_RSS_FILE: rssFile },
  });
  const wallMs = performance.now() - started;
  if (child.error !== undefined) throw child.error;
  if (child.status !== 0) {
    throw new Error(`node ${nodeArgs.join(' ')} exited with ${child.status ?? child.signal}:\n${child.stderr.slice(-4000)}`);
  }
  const rssText = (await readFile(rssFile, 'utf8')).trim();
  await rm(rssFile, { force: true });
  const rssKiB = Number(rssText);
  if (!Number.isFinite(rssKiB) || rssKiB <= 0) throw new Error(`could not read peak RSS from "${rssText}"`);
  return { wallMs, peakRssBytes: rssKiB * 1024, stderr: child.stderr };
}

/** Runs `kiln ARGS...` as a whole process (see runNode). */
export function runKiln(args: readonly string[], scratch: string): Promise<ProcessRun> {
  return runNode([KILN_BIN, ...args], scratch);
}

/** How a `--progress rawjson` build went: vertices by their final state. */
export interface ProgressSummary {
  readonly vertices: number;
  readonly cached: number;
  /** Names of vertices that ran (not cached). */
  readonly ran: readonly string[];
}

/** Reads a `--progress rawjson` stream (stderr of `kiln build`). */
export function summarizeProgress(stderr: string): ProgressSummary {
  const last = new Map<string, { name: string; cached: boolean }>();
  for (const line of stderr.split('\n')) {
    if (!line.startsWith('{')) continue;
    const event = JSON.parse(line) as { type?: string; digest?: string; name?: string; cached?: boolean };
    if (event.type === 'vertex' && event.digest !== undefined) {
      last.set(event.digest, { name: event.name ?? event.digest, cached: event.cached === true });
    }
  }
  const ran = [...last.values()].filter((v) => !v.cached).map((v) => v.name);
  return { vertices: last.size, cached: last.size - ran.length, ran };
}

/** The sum of `values`. */
export function sum(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

/** The median of `values` (the mean of the middle two for an even count). */
export function median(values: readonly number[]): number {
  if (values.length === 0) throw new Error('median of no values');
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** A measured figure and the most it may be. */
export interface Figure {
  readonly label: string;
  readonly value: number;
  readonly target: number;
  /** Printed after value and target, e.g. `s`, `ms`, `MB`, `%`. */
  readonly unit: string;
  readonly digits?: number;
}

/** Prints `LABEL  VALUE UNIT  target <= T UNIT  ratio R  ok|MISSED by X%`. Returns whether it met the target. */
export function printFigure(figure: Figure): boolean {
  const digits = figure.digits ?? 3;
  const ratio = figure.value / figure.target;
  const met = ratio <= 1;
  const verdict = met ? 'ok' : `MISSED by ${((ratio - 1) * 100).toFixed(0)}%`;
  console.log(
    `  ${figure.label.padEnd(40)} ${figure.value.toFixed(digits).padStart(10)} ${figure.unit.padEnd(3)}` +
      `  target <= ${figure.target.toFixed(digits)} ${figure.unit.padEnd(3)}  ratio ${ratio.toFixed(2)}  ${verdict}`,
  );
  return met;
}

/** Prints a figure that has no target (context for the others). */
export function printContext(label: string, value: number, unit: string, digits = 3): void {
  console.log(`  ${label.padEnd(40)} ${value.toFixed(digits).padStart(10)} ${unit}`);
}

/** Prints the command that reproduces this bench from the repository root. */
export function printReproduce(benchFile: string): void {
  console.log(`  reproduce: npm run build && node dist/bench/${benchFile}`);
}

/** Bytes to MB (10^6), the unit RSS targets are given in. */
export function megabytes(bytes: number): number {
  return bytes / 1e6;
}

/** A small seeded PRNG (mulberry32): the same seed gives the same generated files in every run. */
export function mulberry32(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Writes about `bytes` of files under `dir`: 3/4 text-like, 1/4 random, 4 KiB to 1 MiB each. */
export async function writeMixedTree(dir: string, bytes: number, seed: number): Promise<void> {
  let written = 0;
  let n = 0;
  const words = 'alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau\n';
  while (written < bytes) {
    const size = 4096 << (n % 9);
    const folder = path.join(dir, `d${seed}-${n % 13}`, `e${n % 7}`);
    await mkdir(folder, { recursive: true });
    const body = n % 4 === 3 ? randomBytes(size) : Buffer.from(`${seed}:${n}\n${words.repeat(Math.ceil(size / words.length))}`.slice(0, size));
    await writeFile(path.join(folder, `f${n}`), body);
    written += size;
    n++;
  }
}

/** What {@link pushMixedImage} makes. */
export interface MixedImageOptions {
  /** Scratch space (the layers' trees and a kiln root, removed when done). */
  readonly work: string;
  /** Where to push, `HOST/REPO:TAG` of an insecure local registry. */
  readonly image: string;
  readonly layers: number;
  /** About how many bytes each layer's tree holds (see writeMixedTree). */
  readonly layerBytes: number;
}

/**
 * Builds an image of `layers` layers (each a tree from writeMixedTree, merged
 * in order) with kiln on a root of its own and pushes it; returns the bytes
 * the trees held (`du -sb` of each, summed): the image unpacked.
 */
export async function pushMixedImage(options: MixedImageOptions): Promise<number> {
  const ops: Record<string, unknown> = {};
  const locals: string[] = [];
  let treeBytes = 0;
  for (let i = 0; i < options.layers; i++) {
    const dir = path.join(options.work, `layer${i}`);
    await writeMixedTree(dir, options.layerBytes, i);
    treeBytes += duBytes(dir);
    ops[`l${i}`] = { source: { identifier: `local://l${i}` } };
    locals.push('--local', `l${i}=${dir}`);
  }
  ops['all'] = { inputs: Object.keys(ops), merge: { inputs: Object.keys(ops).map((_, i) => i) } };
  const makeFile = path.join(options.work, 'make.json');
  await writeFile(makeFile, JSON.stringify({ version: 1, ops, result: 'all' }));
  const root = path.join(options.work, 'make-root');
  await runKiln(['build', makeFile, '--root', root, ...locals, '--output', `type=image,name=${options.image},push=true,registry.insecure=true`], options.work);
  await rm(root, { recursive: true, force: true });
  for (let i = 0; i < options.layers; i++) await rm(path.join(options.work, `layer${i}`), { recursive: true, force: true });
  return treeBytes;
}

/** `du -sb DIR`: apparent bytes, each hardlinked file once. */
export function duBytes(dir: string): number {
  const r = spawnSync('du', ['-sb', dir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`du -sb ${dir}: ${r.stderr}`);
  return Number(r.stdout.split('\t')[0]);
}
