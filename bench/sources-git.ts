/**
 * The git source against plain git, on a repository of 10,000 files served
 * by `git daemon` on 127.0.0.1 (git://):
 *
 * 1. first checkout: the git source of one op on a fresh kiln root, its
 *    cache key and its snapshot (ls-remote, fetch into the bare cache
 *    repository, checkout into a snapshot, fixed mtimes, commit), timed
 *    in-process around those calls (the session and worker are opened
 *    before the clock starts: they are not the source's work);
 *    floor: `git clone --depth 1 --branch main` of the same ref (which
 *    checks out too), timed as a process. Alternated, 5 runs each, medians
 *    compared, with the median of each step the source reports. Target:
 *    <= 1.3x the floor.
 * 2. re-resolve: the cache key again on the warm root, from a new instance,
 *    where the branch has not moved: one `git ls-remote`. Median of 10. Target:
 *    <= 100 ms. Also printed: a bare `git ls-remote` process (its floor).
 *
 * Each process loads execa once; a warm-up checkout of a one-file repository
 * runs first so that no timed run pays for it.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { CacheManager } from '../src/cache/types.js';
import { Session } from '../src/client/session.js';
import { loadDefinition } from '../src/llb/load.js';
import type { ProgressSink } from '../src/progress/types.js';
import { DEFAULT_SOURCES } from '../src/source/registry.js';
import type { SourceContext, SourceOpOf } from '../src/source/types.js';
import { rootLayout } from '../src/store/layout.js';
import { commitFiles, gitIn, initRepo, startGitDaemon } from '../test/support/git-servers.js';
import { median, printContext, printFigure, printHeader, printReproduce, tempDir } from './harness.js';

const FOLDERS = 100;
const FILES_PER_FOLDER = 100;
const RUNS = 5;
const RESOLVES = 10;
const TARGET_RATIO = 1.3;
const TARGET_RESOLVE_MS = 100;

/** Writes the repository's files: 100 folders of 100 small files each, deterministic. */
async function writeFiles(dir: string): Promise<void> {
  for (let d = 0; d < FOLDERS; d++) {
    await mkdir(path.join(dir, `d${d}`), { recursive: true });
    for (let f = 0; f < FILES_PER_FOLDER; f++) await writeFile(path.join(dir, `d${d}`, `f${f}.txt`), `folder ${d} file ${f}\n`.repeat(1 + ((d * f) % 20)));
  }
}

/** The git source op of `identifier`, loaded. */
function sourceOp(identifier: string): SourceOpOf {
  const def = loadDefinition({ version: 1, ops: { repo: { source: { identifier } } }, result: 'repo' });
  const op = def.ops.get('repo');
  if (op?.body.kind !== 'source') throw new Error('no source op');
  return { ...op, body: op.body };
}

/** A session on `root` and the git source's context in it. */
async function openSource(root: string): Promise<{ session: Session; cache: CacheManager; ctx: SourceContext } & AsyncDisposable> {
  const session = await Session.open({ root });
  const { cache } = await session.workers.select({ constraints: [] });
  const ctx: SourceContext = {
    bindings: { locals: new Map(), ociLayouts: new Map() },
    content: session.content,
    registry: () => Promise.reject(new Error('no registry in this bench')),
    gitRepos: rootLayout(root).git,
    secrets: new Map(),
    ssh: new Map(),
  };
  return { session, cache, ctx, [Symbol.asyncDispose]: () => session.close() };
}

/** Milliseconds of one timed source: the whole, and each step it reported (status events). */
interface SourceTiming {
  readonly total: number;
  readonly steps: ReadonlyMap<string, number>;
}

/** The step a status id names: `resolving main` -> `resolving`. */
function stepName(id: string): string {
  return id.split(' ')[0] ?? id;
}

/**
 * Milliseconds the git source takes for `identifier` on `root`: resolve,
 * key, and (with `snapshot`) the checkout into a committed snapshot; with
 * the time of each step it reports (resolving, fetching, checking out).
 */
async function timedSource(root: string, identifier: string, snapshot: boolean): Promise<SourceTiming> {
  await using source = await openSource(root);
  const op = sourceOp(identifier);
  const signal = new AbortController().signal;
  const steps = new Map<string, number>();
  const begun = new Map<string, number>();
  const progress: ProgressSink = {
    emit(event) {
      if (event.type !== 'status') return;
      if (event.completed === undefined) begun.set(event.id, performance.now());
      else steps.set(stepName(event.id), (steps.get(stepName(event.id)) ?? 0) + performance.now() - (begun.get(event.id) ?? performance.now()));
    },
  };
  const started = performance.now();
  const instance = DEFAULT_SOURCES.resolve(op, source.ctx);
  await instance.cacheKey(signal, progress);
  const ref = snapshot ? await instance.snapshot(source.cache, signal, progress) : null;
  const total = performance.now() - started;
  await ref?.release();
  return { total, steps };
}

function timedProcess(file: string, args: readonly string[]): number {
  const started = performance.now();
  execFileSync(file, args, { stdio: 'ignore', env: { ...process.env, GIT_CONFIG_GLOBAL: '/dev/null', GIT_CONFIG_NOSYSTEM: '1' } });
  return performance.now() - started;
}

async function main(): Promise<void> {
  printHeader(`sources-git: first checkout of ${FOLDERS * FILES_PER_FOLDER} files over git:// vs git clone --depth 1; an unchanged branch re-resolved`, { runsProcesses: false });
  await using dir = await tempDir('sources-git');
  const srv = path.join(dir.path, 'srv');
  await initRepo(path.join(srv, 'big'));
  await writeFiles(path.join(srv, 'big'));
  await commitFiles(path.join(srv, 'big'), {}, 'files');
  await initRepo(path.join(srv, 'small'));
  await commitFiles(path.join(srv, 'small'), { 'a.txt': 'a\n' });
  await using daemon = await startGitDaemon(srv);
  const big = `${daemon.url}/big#main`;

  await timedSource(path.join(dir.path, 'root-warm'), `${daemon.url}/small#main`, true);

  const checkouts: SourceTiming[] = [];
  const clones: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    checkouts.push(await timedSource(path.join(dir.path, `root-${i}`), big, true));
    clones.push(timedProcess('git', ['clone', '--quiet', '--depth', '1', '--branch', 'main', `${daemon.url}/big`, path.join(dir.path, `clone-${i}`)]));
  }
  const count = Number(await gitIn(path.join(dir.path, 'clone-0'), ['ls-files']).then((out) => out.split('\n').length));

  const resolves: number[] = [];
  const lsRemotes: number[] = [];
  for (let i = 0; i < RESOLVES; i++) {
    resolves.push((await timedSource(path.join(dir.path, 'root-0'), big, false)).total);
    lsRemotes.push(timedProcess('git', ['ls-remote', `${daemon.url}/big`, 'main', 'main^{}']));
  }
  const checkoutMs = median(checkouts.map((c) => c.total));

  console.log(`  ${count} files over git:// on 127.0.0.1; checkout and clone alternated, medians of ${RUNS}; re-resolve median of ${RESOLVES}`);
  printContext('kiln: first checkout (key + snapshot)', checkoutMs, 'ms', 1);
  for (const name of ['resolving', 'fetching', 'checking']) {
    printContext(`  of which ${name === 'checking' ? 'checking out (+ mtimes)' : name}`, median(checkouts.map((c) => c.steps.get(name) ?? 0)), 'ms', 1);
  }
  printContext('  of which the rest (setup, commit)', median(checkouts.map((c) => c.total - [...c.steps.values()].reduce((a, b) => a + b, 0))), 'ms', 1);
  printContext('floor: git clone --depth 1 (process)', median(clones), 'ms', 1);
  const checkoutOk = printFigure({ label: 'first checkout / clone', value: checkoutMs / median(clones), target: TARGET_RATIO, unit: 'x', digits: 2 });
  printContext('floor: git ls-remote (process)', median(lsRemotes), 'ms', 1);
  const resolveOk = printFigure({ label: 'unchanged branch re-resolved (key)', value: median(resolves), target: TARGET_RESOLVE_MS, unit: 'ms', digits: 1 });
  printReproduce('sources-git.js');
  if (!checkoutOk || !resolveOk) process.exitCode = 1;
}

await main();
