/**
 * Reads the `.cpuprofile` that `node --cpu-prof` wrote and says where the
 * time went: the functions with the most self time, and the same time
 * grouped by area (a kiln folder, an npm package, a part of node itself).
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { KILN_BIN, runNode } from './harness.js';

/** The parts of V8's profile format read here. */
interface CpuProfile {
  readonly nodes: readonly {
    readonly id: number;
    readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  }[];
  readonly startTime: number;
  readonly endTime: number;
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

const TOP = 15;

/** Groups a script URL: `kiln src/cache`, `npm lmdb`, `node:internal/modules`, or node's pseudo-frames. */
function areaOf(url: string, functionName: string): string {
  if (url === '') return functionName.startsWith('(') ? functionName : '(native)';
  const pkg = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (pkg !== null) return `npm ${pkg[1]}`;
  const kiln = /\/dist\/(src\/[^/]+|bin)/.exec(url) ?? /\/(bin)\/kiln\.js$/.exec(url);
  if (kiln !== null) return `kiln ${kiln[1]!.replace(/\.js$/, '')}`;
  if (url.startsWith('node:')) return url.split('/').slice(0, 2).join('/');
  return path.basename(url);
}

/** A frame's script, short: `src/llb/load.js`, `lmdb/dist/index.cjs`, `node:fs`. */
function shortUrl(url: string): string {
  for (const marker of ['/node_modules/', '/dist/']) {
    const at = url.lastIndexOf(marker);
    if (at >= 0) return url.slice(at + marker.length);
  }
  return url;
}

function table(title: string, rows: [string, number][], totalUs: number): string {
  const lines = rows
    .sort((a, b) => b[1] - a[1])
    .slice(0, TOP)
    .map(([name, us]) => `    ${(us / 1000).toFixed(1).padStart(8)} ms ${((100 * us) / totalUs).toFixed(1).padStart(5)}%  ${name}`);
  return [`  ${title}`, ...lines].join('\n');
}

/** Runs `kiln ARGS...` once under `node --cpu-prof` and summarizes the profile as text. */
export async function profileKiln(args: readonly string[], scratch: string): Promise<string> {
  const dir = await mkdtemp(path.join(scratch, 'cpu-prof-'));
  try {
    await runNode(['--cpu-prof', '--cpu-prof-dir', dir, KILN_BIN, ...args], scratch);
    return await summarize(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function summarize(dir: string): Promise<string> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.cpuprofile'));
  if (files.length !== 1) throw new Error(`expected one .cpuprofile in ${dir}, found ${files.length}`);
  const profile = JSON.parse(await readFile(path.join(dir, files[0]!), 'utf8')) as CpuProfile;
  const frames = new Map(profile.nodes.map((n) => [n.id, n.callFrame]));
  const byFunction = new Map<string, number>();
  const byArea = new Map<string, number>();
  // Each sample stands for the time until the next one.
  for (let i = 0; i < profile.samples.length; i++) {
    const frame = frames.get(profile.samples[i]!);
    const us = profile.timeDeltas[i + 1] ?? 0;
    if (frame === undefined) continue;
    const where = frame.url === '' ? '' : ` ${shortUrl(frame.url)}:${frame.lineNumber + 1}`;
    const fn = `${frame.functionName || '(anonymous)'}${where}`;
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + us);
    const area = areaOf(frame.url, frame.functionName);
    byArea.set(area, (byArea.get(area) ?? 0) + us);
  }
  const totalUs = profile.endTime - profile.startTime;
  return [
    `  cpu profile of one more run: ${(totalUs / 1000).toFixed(0)} ms profiled (from V8 start to exit)`,
    table('self time by area:', [...byArea], totalUs),
    table('self time by function:', [...byFunction], totalUs),
  ].join('\n');
}
