/**
 * What keeping every byte of a step's output in the build history costs.
 * One exec op on the busybox rootfs `cat`s a 50 MB build-log-like text file
 * (from a `local://` source, cached after the warm-up) to stdout: progress
 * keeps the first 4 MiB, the history keeps all of it, gzip-compressed as it
 * comes.
 *
 * 1. history: `kiln build` as it runs by default (the step's full log written to the history).
 * 2. floor: the same build with `--history-keep-builds 0` (no history record at all).
 *
 * Each run is a whole `kiln build` process (its own env value, so the step
 * is never cached), timed from spawn to exit; the two alternate, 5 runs
 * each, and their medians are compared. Target: history <= 1.05x floor.
 * Also checked: the history's log of the step has all 50 MB, and the peak
 * RSS of the builds with history stays near the floor's (the log is
 * streamed to disk, never held).
 */
import { createHash } from 'node:crypto';
import { writeFile, mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import type { RawDefinition, RawOp } from '../src/llb/json-types.js';
import { KILN_BIN, median, megabytes, mulberry32, printContext, printFigure, printHeader, printReproduce, type ProcessRun, runKiln, tempDir } from './harness.js';

const LOG_BYTES = 50_000_000;
const RUNS = 5;
const TARGET_RATIO = 1.05;
/** History's peak RSS may exceed the floor's by this much (zlib's buffers and the open streams). */
const RSS_SLACK_MB = 30;
const BUSYBOX_JSON = fileURLToPath(new URL('../../llb-examples/busybox.json', import.meta.url));

/** 50 MB of lines such as a compiler prints: varied numbers and names, compressible as real logs are (about 4-6x). */
function buildLog(): Buffer {
  const random = mulberry32(19);
  const words = ['CC', 'LD', 'AR', 'GEN', 'warning:', 'note:', 'unused', 'variable', 'inlined', 'from', 'module', 'src', 'include', 'optimizing'];
  const lines: string[] = [];
  let size = 0;
  for (let i = 0; size < LOG_BYTES; i++) {
    const pick = (): string => words[Math.floor(random() * words.length)] ?? 'x';
    const line = `[${(i / 100).toFixed(3).padStart(10)}] ${pick()} src/module_${Math.floor(random() * 500)}/file_${Math.floor(random() * 10_000)}.c ${pick()} ${pick()} 0x${Math.floor(random() * 2 ** 32).toString(16)}\n`;
    lines.push(line);
    size += line.length;
  }
  return Buffer.from(lines.join('')).subarray(0, LOG_BYTES);
}

function step(run: string): RawOp {
  return {
    inputs: ['base', 'logs'],
    exec: {
      meta: { args: ['/bin/sh', '-c', 'cat /in/log.txt'], env: [`RUN=${run}`] },
      mounts: [
        { dest: '/', input: 0, output: -1, readonly: true },
        { dest: '/in', input: 1, output: -1, readonly: true },
        { dest: '/out', input: -1, output: 0 },
      ],
    },
    metadata: { description: { 'llb.customname': 'chatty' } },
  };
}

async function main(): Promise<void> {
  printHeader(`history-logs: a step printing ${LOG_BYTES / 1e6} MB, whole-process \`kiln build\` with its full log kept in the history vs with no history`, { runsProcesses: true });
  await using dir = await tempDir('history-logs');
  const root = path.join(dir.path, 'root');
  const logs = path.join(dir.path, 'logs');
  await mkdir(logs);
  const log = buildLog();
  await writeFile(path.join(logs, 'log.txt'), log);
  const base = { ...(JSON.parse(await readFile(BUSYBOX_JSON, 'utf8')) as RawDefinition).ops, logs: { source: { identifier: 'local://logs' } } };
  const build = async (run: string, args: readonly string[]): Promise<ProcessRun> => {
    const file = path.join(dir.path, `${run}.json`);
    await writeFile(file, JSON.stringify({ version: 1, ops: { ...base, chatty: step(run) }, result: 'chatty' } satisfies RawDefinition));
    return runKiln(['build', file, '--root', root, '--local', 'tools=/bin', '--local', `logs=${logs}`, '--progress', 'plain', ...args], dir.path);
  };

  // Warm-up: the base and the 50 MB source, cached from here on.
  await build('warm', ['--history-keep-builds', '0']);
  const withHistory: ProcessRun[] = [];
  const floor: ProcessRun[] = [];
  for (let i = 0; i < RUNS; i++) {
    withHistory.push(await build(`history-${i}`, []));
    floor.push(await build(`floor-${i}`, ['--history-keep-builds', '0']));
  }
  // The last build's log holds every byte the step printed.
  const kept = execFileSync(process.execPath, [KILN_BIN, 'history', 'logs', '--vertex', 'chatty', '--root', root], { maxBuffer: 2 * LOG_BYTES });
  const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
  if (sha(kept) !== sha(log)) throw new Error(`the history's log of the step is not what it printed (${kept.length} bytes, expected ${log.length})`);
  const stored = execFileSync('du', ['-sb', path.join(root, 'history')], { encoding: 'utf8' }).split('\t')[0] ?? '0';

  const wall = (runs: readonly ProcessRun[]): number => median(runs.map((r) => r.wallMs)) / 1000;
  const rss = (runs: readonly ProcessRun[]): number => Math.max(...runs.map((r) => megabytes(r.peakRssBytes)));
  console.log(`  ${RUNS} builds each, alternating; medians of whole-process wall time; the kept log checked byte for byte (${kept.length} bytes)`);
  printContext('floor: no history, median', wall(floor), 's', 3);
  printContext('history: full log kept, median', wall(withHistory), 's', 3);
  printContext(`history on disk for ${RUNS} builds`, megabytes(Number(stored)), 'MB', 1);
  printContext('peak RSS, floor (largest)', rss(floor), 'MB', 1);
  const timeOk = printFigure({ label: 'history / floor, wall time', value: wall(withHistory) / wall(floor), target: TARGET_RATIO, unit: 'x', digits: 3 });
  const rssOk = printFigure({ label: 'peak RSS with history (largest)', value: rss(withHistory), target: rss(floor) + RSS_SLACK_MB, unit: 'MB', digits: 1 });
  printReproduce('history-logs.js');
  if (!timeOk || !rssOk) process.exitCode = 1;
}

await main();
