/**
 * Reading a cache mount, against reading the same files from a read-only
 * input. On the busybox rootfs of llb-examples/busybox.json (built first, so
 * it is cached in every timed build):
 *
 * 1. fill: one exec op writes 5,000 small files (50 folders of 100) into a
 *    cache mount at /cache (printed for context).
 * 2. read: another exec op (its own env each run, so it is never cached)
 *    reads them all through the same cache mount:
 *    `find /cache -type f | sort | xargs cat | md5sum`.
 * 3. floor: the same reading op, where /cache is instead a read-only bind
 *    mount of an input holding the same files (a `local://` source of a host
 *    directory the bench writes): what reading those files costs kiln when
 *    they are an ordinary input.
 *
 * Step times come from `--progress rawjson` (the exec vertex's started and
 * completed). Read and floor run alternately, 5 times each; their medians
 * are compared. Target: read <= 1.2x floor. The checksums must agree.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RawDefinition, RawMount, RawOp } from '../src/llb/json-types.js';
import { median, printContext, printFigure, printHeader, printReproduce, type ProcessRun, runKiln, tempDir } from './harness.js';

const FOLDERS = 50;
const FILES_PER_FOLDER = 100;
const RUNS = 5;
const TARGET_RATIO = 1.2;
const READ = 'find /cache -type f | sort | xargs cat | md5sum > /out/sum';
/** Writes exactly what writeHostFiles writes, from inside the container. */
const FILL = `d=0; while [ $d -lt ${FOLDERS} ]; do mkdir -p /cache/d$d; f=0; while [ $f -lt ${FILES_PER_FOLDER} ]; do echo "file $d $f" > /cache/d$d/f$f; f=$((f+1)); done; d=$((d+1)); done`;

const BUSYBOX_JSON = fileURLToPath(new URL('../../llb-examples/busybox.json', import.meta.url));
const TOOLS = '/bin';

async function writeHostFiles(dir: string): Promise<void> {
  for (let d = 0; d < FOLDERS; d++) {
    await mkdir(path.join(dir, `d${d}`), { recursive: true });
    for (let f = 0; f < FILES_PER_FOLDER; f++) await writeFile(path.join(dir, `d${d}`, `f${f}`), `file ${d} ${f}\n`);
  }
}

/** An exec op named `name` on the base running `script`, /out its result, `cache` (a mount minus its dest) at /cache; `inputs` after the base. */
function step(name: string, script: string, cache: Omit<RawMount, 'dest'>, inputs: readonly string[] = []): RawOp {
  return {
    inputs: ['base', ...inputs],
    exec: {
      meta: { args: ['/bin/sh', '-c', script], env: [`STEP=${name}`] },
      mounts: [
        { dest: '/', input: 0, output: -1, readonly: true },
        { dest: '/out', input: -1, output: 0 },
        { dest: '/cache', ...cache },
      ],
    },
    metadata: { description: { 'llb.customname': name } },
  };
}

/** Milliseconds from started to completed of the vertex `name` (it must have run, not been cached). */
function stepMs(run: ProcessRun, name: string): number {
  for (const line of run.stderr.split('\n')) {
    if (!line.startsWith('{')) continue;
    const event = JSON.parse(line) as { type?: string; name?: string; started?: string; completed?: string; cached?: boolean };
    if (event.type === 'vertex' && event.name === name && event.cached !== true && event.started !== undefined && event.completed !== undefined) {
      return Date.parse(event.completed) - Date.parse(event.started);
    }
  }
  throw new Error(`"${name}" did not run in the build (cached, or missing from its progress)`);
}

async function main(): Promise<void> {
  printHeader(`cache-mount: reading ${FOLDERS * FILES_PER_FOLDER} small files from a cache mount vs from a read-only input, whole-process \`kiln build\``, { runsProcesses: true });
  await using dir = await tempDir('cache-mount');
  const base: Record<string, RawOp> = {
    ...(JSON.parse(await readFile(BUSYBOX_JSON, 'utf8')) as RawDefinition).ops,
    files: { source: { identifier: 'local://files' } },
  };
  const root = path.join(dir.path, 'root');
  const files = path.join(dir.path, 'files');
  await writeHostFiles(files);
  /** Builds `op` (named `name`) and returns the run and the checksum it wrote. */
  const build = async (name: string, op: RawOp): Promise<{ run: ProcessRun; sum: string }> => {
    const file = path.join(dir.path, `${name}.json`);
    const out = path.join(dir.path, `out-${name}`);
    await writeFile(file, JSON.stringify({ version: 1, ops: { ...base, [name]: op }, result: name } satisfies RawDefinition));
    const run = await runKiln(['build', file, '--root', root, '--local', `tools=${TOOLS}`, '--local', `files=${files}`, '--output', `type=local,dest=${out}`, '--progress', 'rawjson'], dir.path);
    return { run, sum: (await readFile(path.join(out, 'sum'), 'utf8').catch(() => '')).trim() };
  };
  const cache: Omit<RawMount, 'dest'> = { type: 'cache', cache: { id: 'bench-files', sharing: 'shared' } };
  const input: Omit<RawMount, 'dest'> = { input: 1, readonly: true };

  // Warm-up: the base, and the local source the floor reads, both cached from here on.
  await build('warm', step('warm', 'true', input, ['files']));
  const fill = await build('fill', step('fill', `${FILL}; echo filled > /out/sum`, cache));
  const fillMs = stepMs(fill.run, 'fill');

  const reads: number[] = [];
  const floors: number[] = [];
  const sums = new Set<string>();
  for (let i = 0; i < RUNS; i++) {
    const read = await build(`read-${i}`, step(`read-${i}`, READ, cache));
    reads.push(stepMs(read.run, `read-${i}`));
    const floor = await build(`floor-${i}`, step(`floor-${i}`, READ, input, ['files']));
    floors.push(stepMs(floor.run, `floor-${i}`));
    sums.add(read.sum).add(floor.sum);
  }
  if (sums.size !== 1) throw new Error(`the cache mount and the input do not hold the same files: checksums ${[...sums].join(', ')}`);

  console.log(`  ${FOLDERS * FILES_PER_FOLDER} files in ${FOLDERS} folders; step times from progress; medians of ${RUNS}`);
  printContext('fill: write them into the cache mount', fillMs, 'ms', 1);
  printContext('read: the cache mount, median step', median(reads), 'ms', 1);
  printContext('floor: a read-only input, median step', median(floors), 'ms', 1);
  printContext('read / fill', median(reads) / fillMs, 'x', 2);
  const ok = printFigure({ label: 'read / floor', value: median(reads) / median(floors), target: TARGET_RATIO, unit: 'x', digits: 2 });
  printReproduce('cache-mount.js');
  if (!ok) process.exitCode = 1;
}

await main();
