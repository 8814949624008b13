/**
 * kiln beside buildkitd on the same pb.Definitions (issue 20's "done when"):
 * BuildKit's own Dockerfile frontend (`dockerfile2llb`) turns each workload
 * into a pb.Definition, and `buildctl build` (against a warm buildkitd, OCI
 * worker, overlayfs) and `kiln build` (defaults) solve it, whole process
 * each, turn by turn in one run. Ratios are kiln's median over BuildKit's.
 *
 * Workloads: a 20-RUN chain on busybox, cold (new keys each turn) and fully
 * cached; 16 stages of `sleep 1` joined by COPY --from; `COPY .` of a
 * 5,000-file context with new contents each turn, and unchanged; the chain
 * exported as an OCI tarball; and the chain on kiln's containerd worker
 * against BuildKit's runc (OCI) worker. The base image is kiln's busybox
 * (llb-examples/busybox.json) pushed to a docker-registry on 127.0.0.1,
 * pulled once by both before the first turn.
 *
 * BuildKit is not part of kiln: build buildkitd, buildctl and the
 * examples/dockerfile2llb program from BuildKit's source (v0.24.0, with Go
 * >= 1.23; its vendor/ directory needs no module proxy) into one directory
 * and point KILN_BENCH_BUILDKIT_DIR at it. Without it the bench says so and
 * exits 0. bench/README.md has the steps.
 */
import { spawn, spawnSync } from 'node:child_process';
import { access, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { startContainerd } from '../test/support/containerd.js';
import { startRegistry } from '../test/support/registry.js';
import { KILN_BIN, median, printContext, printFigure, printHeader, printReproduce, tempDir } from './harness.js';

const TURNS = Number(process.env['KILN_BENCH_RUNS'] ?? '5');
const CACHED_REPEATS = 3;
const CONTEXT_FILES = 5000;

/** Runs a command to its end; throws with its stderr when it fails. Returns its wall time in ms. */
function timed(file: string, args: readonly string[], options: { input?: Buffer; cwd?: string } = {}): number {
  const start = performance.now();
  const r = spawnSync(file, args, { input: options.input, cwd: options.cwd, stdio: ['pipe', 'ignore', 'pipe'], maxBuffer: 64 * 1024 * 1024 });
  const ms = performance.now() - start;
  if (r.status !== 0) throw new Error(`${path.basename(file)} ${args.join(' ')} failed (${r.status ?? r.signal}):\n${r.stderr.toString().slice(-3000)}`);
  return ms;
}

/** The binaries of a BuildKit build, or undefined when they are not all there. */
async function buildkitBinaries(): Promise<{ buildkitd: string; buildctl: string; dockerfile2llb: string } | undefined> {
  const dir = process.env['KILN_BENCH_BUILDKIT_DIR'];
  if (dir === undefined || dir === '') return undefined;
  const bins = { buildkitd: path.join(dir, 'buildkitd'), buildctl: path.join(dir, 'buildctl'), dockerfile2llb: path.join(dir, 'dockerfile2llb') };
  for (const file of Object.values(bins)) {
    if (!(await access(file).then(() => true, () => false))) throw new Error(`KILN_BENCH_BUILDKIT_DIR has no ${path.basename(file)}`);
  }
  return bins;
}

async function main(): Promise<void> {
  printHeader('buildkit-side-by-side: kiln and buildkitd on the pb.Definitions of BuildKit\'s dockerfile2llb, whole process, alternated', { runsProcesses: true });
  const bins = await buildkitBinaries();
  if (bins === undefined) {
    console.log('  skipped: set KILN_BENCH_BUILDKIT_DIR to a directory holding buildkitd, buildctl and dockerfile2llb (see bench/README.md)');
    return;
  }
  await using dir = await tempDir('buildkit-side-by-side');
  const work = dir.path;
  const registry = await startRegistry();
  const containerd = await startContainerd();
  const bkRoot = path.join(work, 'bk');
  const socket = path.join(work, 'bk.sock');
  await writeFile(path.join(work, 'buildkitd.toml'), `[worker.oci]\n  enabled = true\n  snapshotter = "overlayfs"\n[worker.containerd]\n  enabled = false\n[registry."${registry.host}"]\n  http = true\n`);
  const daemon = spawn(bins.buildkitd, ['--root', bkRoot, '--addr', `unix://${socket}`, '--config', path.join(work, 'buildkitd.toml')], { stdio: 'ignore' });
  try {
    const buildctl = (args: readonly string[], input?: Buffer): number => timed(bins.buildctl, ['--addr', `unix://${socket}`, ...args], input === undefined ? {} : { input });
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        buildctl(['debug', 'workers']);
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    const kilnRoot = path.join(work, 'kiln');
    const kiln = (args: readonly string[]): number => timed(process.execPath, [KILN_BIN, 'build', ...args, '--root', kilnRoot, '--progress', 'plain']);
    const image = `${registry.host}/busybox:latest`;
    kiln([path.join(path.dirname(KILN_BIN), '..', 'llb-examples', 'busybox.json'), '--local', 'tools=/bin', '-o', `type=image,name=${image},push=true`]);

    let n = 0;
    /** The pb.Definition dockerfile2llb makes of `dockerfile`, written to a file. */
    const definition = async (dockerfile: string): Promise<{ file: string; bytes: Buffer }> => {
      const r = spawnSync(bins.dockerfile2llb, [], { input: dockerfile, maxBuffer: 64 * 1024 * 1024 });
      if (r.status !== 0) throw new Error(`dockerfile2llb failed: ${r.stderr.toString()}`);
      const file = path.join(work, `def-${n++}.pb`);
      await writeFile(file, r.stdout);
      return { file, bytes: r.stdout };
    };
    const nonce = Date.now().toString(36);
    const chain = (tag: string): string => `FROM ${image}\n${Array.from({ length: 20 }, (_, i) => `RUN echo ${tag}-${i} > /s${i}\n`).join('')}`;
    const stages = (tag: string): string =>
      `${Array.from({ length: 16 }, (_, i) => `FROM ${image} AS s${i}\nRUN sleep 1 && echo ${tag}-${i} > /o${i}\n`).join('')}FROM ${image}\n${Array.from({ length: 16 }, (_, i) => `COPY --from=s${i} /o${i} /o${i}\n`).join('')}`;
    const writeContext = async (tag: string): Promise<string> => {
      const ctx = path.join(work, `ctx-${tag}`);
      for (let i = 0; i < CONTEXT_FILES; i++) {
        const sub = path.join(ctx, `d${String(i % 50).padStart(2, '0')}`);
        if (i < 50) await mkdir(sub, { recursive: true });
        await writeFile(path.join(sub, `f${i}.txt`), `${tag}${'x'.repeat(i % 300)}\n`);
      }
      return ctx;
    };

    // Both pull the base once.
    const warm = await definition(`FROM ${image}\nRUN true\n`);
    buildctl(['build', '--progress', 'plain'], warm.bytes);
    kiln([warm.file]);

    const times = new Map<string, { kiln: number[]; buildkit: number[] }>();
    const record = (name: string, kilnMs: number, buildkitMs: number): void => {
      const entry = times.get(name) ?? { kiln: [], buildkit: [] };
      entry.kiln.push(kilnMs);
      entry.buildkit.push(buildkitMs);
      times.set(name, entry);
    };
    const ctdArgs = ['--worker', 'containerd', '--containerd-address', containerd.address];
    for (let turn = 0; turn < TURNS; turn++) {
      const cold = await definition(chain(`${nonce}-c${turn}`));
      record('20-RUN chain, cold', kiln([cold.file]), buildctl(['build', '--progress', 'plain'], cold.bytes));
      for (let i = 0; i < CACHED_REPEATS; i++) record('20-RUN chain, cached', kiln([cold.file]), buildctl(['build', '--progress', 'plain'], cold.bytes));

      const ctd = await definition(chain(`${nonce}-k${turn}`));
      record('chain: kiln containerd / BuildKit runc', kiln([ctd.file, ...ctdArgs]), buildctl(['build', '--progress', 'plain'], ctd.bytes));

      const fan = await definition(stages(`${nonce}-s${turn}`));
      record('16 stages of sleep 1', kiln([fan.file]), buildctl(['build', '--progress', 'plain'], fan.bytes));

      const ctx = await writeContext(`${nonce}-x${turn}`);
      const copy = await definition(`FROM ${image}\nCOPY . /ctx\nRUN echo ${nonce}-${turn}\n`);
      const local = ['--local', `context=${ctx}`];
      // The order alternates, so neither tool always reads the new files from a cold page cache.
      if (turn % 2 === 0) {
        const k = kiln([copy.file, ...local]);
        record('5,000-file context, cold', k, buildctl(['build', '--progress', 'plain', ...local], copy.bytes));
      } else {
        const b = buildctl(['build', '--progress', 'plain', ...local], copy.bytes);
        record('5,000-file context, cold', kiln([copy.file, ...local]), b);
      }
      for (let i = 0; i < CACHED_REPEATS; i++) record('5,000-file context, unchanged', kiln([copy.file, ...local]), buildctl(['build', '--progress', 'plain', ...local], copy.bytes));

      const oci = await definition(chain(`${nonce}-o${turn}`));
      kiln([oci.file]);
      buildctl(['build', '--progress', 'plain'], oci.bytes);
      record(
        'chain + OCI tarball export (cached chain)',
        kiln([oci.file, '-o', `type=oci,dest=${path.join(work, 'kiln.tar')}`]),
        buildctl(['build', '--progress', 'plain', '--output', `type=oci,dest=${path.join(work, 'bk.tar')}`], oci.bytes),
      );
    }

    // The side-by-side limits.
    const limits: Record<string, number> = {
      '20-RUN chain, cold': 0.75,
      '20-RUN chain, cached': 1.5,
      'chain: kiln containerd / BuildKit runc': 1.0,
      '16 stages of sleep 1': 0.8,
      '5,000-file context, cold': 0.8,
      '5,000-file context, unchanged': 1.2,
      'chain + OCI tarball export (cached chain)': 0.7,
    };
    let allMet = true;
    for (const [name, t] of times) {
      const k = median(t.kiln);
      const b = median(t.buildkit);
      printContext(`${name}: kiln, median (ms)`, k, 'ms', 1);
      printContext(`${name}: BuildKit, median (ms)`, b, 'ms', 1);
      allMet = printFigure({ label: `${name}: kiln / BuildKit`, value: k / b, target: limits[name] ?? 1, unit: 'x', digits: 2 }) && allMet;
    }
    printReproduce('buildkit-side-by-side.js (with KILN_BENCH_BUILDKIT_DIR)');
    if (!allMet) process.exitCode = 1;
  } finally {
    daemon.kill('SIGTERM');
    await new Promise((resolve) => daemon.once('exit', resolve));
    spawnSync('sh', ['-c', `grep " ${bkRoot}" /proc/self/mountinfo | cut -d' ' -f5 | sort -r | xargs -r umount -l`]);
    await containerd.close();
    await registry.stop();
  }
}

await main();
