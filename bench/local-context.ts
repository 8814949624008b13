/**
 * A large local context that did not change: 10,000 files, 200 MiB in all,
 * sizes spread log-uniformly from ~150 B to ~150 KB, read by a `local://`
 * source with one small file op on top. The first build copies and hashes
 * everything; an unchanged rebuild (a whole `kiln build` process) should only
 * notice that nothing changed. Target: rebuild <= 10% of the first build.
 *
 * `--profile` also runs one unchanged rebuild under `node --cpu-prof` and
 * prints where its CPU time goes.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { RawDefinition } from '../src/llb/json-types.js';
import { profileKiln } from './cpu-profile.js';
import { median, megabytes, mulberry32, printContext, printFigure, printHeader, printReproduce, runKiln, summarizeProgress, sum, tempDir, type ProcessRun } from './harness.js';

const DIRS = 100;
const FILES_PER_DIR = 100;
const TOTAL_BYTES = 200 * 1024 * 1024;
const REBUILDS = 3;
const TARGET_PERCENT = 10;
const STAMP = 'stamp the context';

/** Writes the context. */
async function generateContext(dir: string): Promise<void> {
  const random = mulberry32(42);
  const weights = Array.from({ length: DIRS * FILES_PER_DIR }, () => Math.exp(random() * Math.log(1000)));
  const scale = TOTAL_BYTES / sum(weights);
  for (let d = 0; d < DIRS; d++) {
    const sub = path.join(dir, `pkg-${d}`, 'src');
    await mkdir(sub, { recursive: true });
    await Promise.all(
      Array.from({ length: FILES_PER_DIR }, (_, f) => {
        const size = Math.max(1, Math.floor(weights[d * FILES_PER_DIR + f]! * scale));
        return writeFile(path.join(sub, `file-${f}.bin`), randomBytes(size));
      }),
    );
  }
}

function definition(): RawDefinition {
  return {
    version: 1,
    ops: {
      context: { source: { identifier: 'local://context' } },
      stamp: {
        inputs: ['context'],
        file: { actions: [{ input: 0, output: 0, mkfile: { path: '/BUILD-STAMP', mode: '0644', data: 'bench\n' } }] },
        metadata: { description: { 'llb.customname': STAMP } },
      },
    },
    result: 'stamp',
  };
}

async function main(): Promise<void> {
  const profile = process.argv.includes('--profile');
  printHeader(`local-context: ${DIRS * FILES_PER_DIR} files, ${TOTAL_BYTES / 2 ** 20} MiB, local source + one mkfile, whole-process \`kiln build\``, { runsProcesses: true });
  await using dir = await tempDir('local-context');
  const context = path.join(dir.path, 'context');
  const file = path.join(dir.path, 'local.json');
  await writeFile(file, JSON.stringify(definition()));
  await generateContext(context);
  const build = ['build', file, '--root', path.join(dir.path, 'root'), '--local', `context=${context}`, '--progress', 'rawjson'];

  const first = await runKiln(build, dir.path);
  const rebuilds: ProcessRun[] = [];
  let ran: readonly string[] = [];
  for (let i = 0; i < REBUILDS; i++) {
    const run = await runKiln(build, dir.path);
    ({ ran } = summarizeProgress(run.stderr));
    if (ran.includes(STAMP)) throw new Error(`the unchanged rebuild ran "${STAMP}" again: the local source's cache key changed`);
    rebuilds.push(run);
  }
  const firstSeconds = first.wallMs / 1000;
  const rebuildSeconds = median(rebuilds.map((r) => r.wallMs / 1000));
  printContext('first build', firstSeconds, 's');
  printContext('first build peak RSS', megabytes(first.peakRssBytes), 'MB', 1);
  console.log(`  unchanged rebuilds: ${rebuilds.map((r) => `${(r.wallMs / 1000).toFixed(3)} s`).join(', ')}; not cached: ${ran.length === 0 ? 'none' : ran.join(', ')}`);
  printContext(`unchanged rebuild, median of ${REBUILDS}`, rebuildSeconds, 's');
  printContext('unchanged rebuild peak RSS, max', megabytes(Math.max(...rebuilds.map((r) => r.peakRssBytes))), 'MB', 1);
  const ok = printFigure({ label: 'rebuild / first build', value: (100 * rebuildSeconds) / firstSeconds, target: TARGET_PERCENT, unit: '%', digits: 1 });
  if (profile) console.log(await profileKiln(build, dir.path));
  printReproduce(`local-context.js${profile ? ' --profile' : ''}`);
  if (!ok) process.exitCode = 1;
}

await main();
