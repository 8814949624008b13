/**
 * Writing a commit's files into a snapshot directory.
 *
 * Plain trees (no `.git` kept, no submodules) are checked out straight from
 * the bare cache repository with a throwaway index: one `read-tree -u` of
 * the commit (or its SUBDIR's tree) writes the files, with git's parallel
 * checkout, which is what `git clone` does after its fetch, without copying
 * an object or making a repository.
 *
 * With `keepgitdir` or submodules the checkout needs a repository of its
 * own: one is made in the target (or a scratch dir when only SUBDIR is
 * kept), given the commit from the cache by a local fetch, with `origin`
 * set to the remote (so relative submodule URLs resolve), then submodules
 * are updated recursively with the op's credentials; a tag REF is fetched
 * into a kept `.git` too (keepTag). Without `keepgitdir`
 * every `.git` (the repository's and the submodules' gitlinks) is removed.
 *
 * Every entry's mtime is then set to one constant (reproducible outputs), in
 * one `find -exec touch {} +` walk.
 */
import { lstat, mkdir, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ERROR_CODES, OpError } from '../../errors.js';
import { run } from '../../snapshot/command.js';
import { copyTree } from '../../snapshot/tree-copy.js';
import { git, GitCommandError } from './git-command.js';
import type { RemoteCall, ResolvedRef } from './remote-cache.js';

/** What to check out, and where. */
export interface CheckoutOptions {
  /** The bare cache repository holding the commit. */
  readonly repo: string;
  readonly resolved: ResolvedRef;
  readonly subdir?: string;
  readonly keepGitDir: boolean;
  /** Leaves submodules out: their paths stay empty directories (git.skipsubmodules). */
  readonly skipSubmodules?: boolean;
  /** The (empty) directory to fill. */
  readonly target: string;
  /** A private scratch directory (removed by the caller). */
  readonly scratch: string;
  /** Seconds since the epoch every entry's mtime is set to. */
  readonly mtime: number;
  /** The remote, its credentials (for submodules), signal and site. */
  readonly call: RemoteCall;
}

/** The type of each object spec (`COMMIT:PATH`) in one git process: `tree`, `blob`, ..., or undefined when missing. */
async function objectTypes(repo: string, call: RemoteCall, specs: readonly string[]): Promise<(string | undefined)[]> {
  const out = await git({ args: ['cat-file', '--batch-check=%(objecttype)'], input: specs.map((s) => `${s}\n`).join(''), cwd: repo, signal: call.signal, action: 'reading the tree', site: call.site });
  return out.split('\n').map((line) => (line.endsWith(' missing') || line.endsWith(' ambiguous') ? undefined : line));
}

/**
 * git's parallel checkout: one worker per CPU (0). The files of a checkout
 * are independent, so several writers may finish sooner than git's default
 * of one, which `git clone` uses. Not settled: for 10,000 small files on the
 * loaded 2-CPU machine, one worker was faster in 11 of 15 runs of
 * `read-tree -u` alone in a shell and slower in 5 of 7 runs inside kiln
 * (bench/README.md, sources-git); not measured idle.
 */
const PARALLEL_CHECKOUT = ['-c', 'checkout.workers=0'];

function notADirectory(o: CheckoutOptions): OpError {
  return new OpError(ERROR_CODES.GIT_SOURCE, `git source ${o.call.site.remote}: "${o.subdir ?? ''}" is not a directory at commit ${o.resolved.commit}`, {
    op: o.call.site.op,
    field: o.call.site.field,
  });
}

/** Checks the commit out into `o.target`. */
export async function checkout(o: CheckoutOptions): Promise<void> {
  if (o.keepGitDir) {
    const { commit } = o.resolved;
    const [submoduleType, subdirType] = await objectTypes(o.repo, o.call, [`${commit}:.gitmodules`, ...(o.subdir === undefined ? [] : [`${commit}:${o.subdir}`])]);
    if (o.subdir !== undefined && subdirType !== 'tree') throw notADirectory(o);
    await checkoutRepository(o, submoduleType === 'blob' && o.skipSubmodules !== true);
  } else if (!(await checkoutPlain(o))) {
    await checkoutRepository(o, true);
  }
  // One walk, one process per few thousand paths (find batches them into touch's argv).
  await run(`cannot set the times of the checkout in ${o.target}`, {
    file: 'find',
    args: [o.target, '-exec', 'touch', '--no-dereference', '--date', `@${o.mtime}`, '--', '{}', '+'],
  });
}

/** Empties `dir`, keeping it. */
async function emptyDir(dir: string): Promise<void> {
  await Promise.all((await readdir(dir)).map((name) => rm(join(dir, name), { recursive: true, force: true })));
}

/**
 * The plain case (no `.git` kept): the tree of the commit (or of its
 * subdir) straight from the cache through a throwaway index, in one git
 * process, which is what `git clone` does after its fetch. A commit with
 * submodules needs a repository of its own: then the target is emptied and
 * false returned. Without a subdir, the checkout itself shows whether the
 * commit has a `.gitmodules`; with one, a `cat-file` (run alongside the
 * checkout) says so, and whether the subdir is a directory.
 */
async function checkoutPlain(o: CheckoutOptions): Promise<boolean> {
  const { commit } = o.resolved;
  const env = { GIT_DIR: o.repo, GIT_WORK_TREE: o.target, GIT_INDEX_FILE: join(o.scratch, 'index') };
  const tree = o.subdir === undefined ? commit : `${commit}:${o.subdir}`;
  const readTree = git({ env, cwd: o.target, signal: o.call.signal, site: o.call.site, action: `checking out ${commit.slice(0, 12)}`, args: [...PARALLEL_CHECKOUT, 'read-tree', '--reset', '-u', tree] });
  let submodules: boolean;
  if (o.subdir === undefined) {
    await readTree;
    // A blob (file or symlink) named .gitmodules at the root, as cat-file would say.
    const entry = await lstat(join(o.target, '.gitmodules')).catch(() => undefined);
    submodules = entry !== undefined && !entry.isDirectory();
  } else {
    const [types, checkedOut] = await Promise.allSettled([objectTypes(o.repo, o.call, [`${commit}:.gitmodules`, tree]), readTree]);
    if (types.status === 'rejected') throw types.reason;
    const [submoduleType, subdirType] = types.value;
    if (subdirType !== 'tree') throw notADirectory(o);
    if (checkedOut.status === 'rejected') throw checkedOut.reason;
    submodules = submoduleType === 'blob';
  }
  if (o.skipSubmodules === true) return true;
  if (submodules) await emptyDir(o.target);
  return !submodules;
}

/** A repository of the checkout's own: for `keepgitdir`, and for submodules. */
async function checkoutRepository(o: CheckoutOptions, submodules: boolean): Promise<void> {
  const { commit, refName } = o.resolved;
  const work = o.subdir === undefined ? o.target : join(o.scratch, 'work');
  await mkdir(work, { recursive: true });
  const call = { cwd: work, signal: o.call.signal, site: o.call.site };
  const step = (action: string, args: readonly string[], env?: Readonly<Record<string, string>>) => git({ ...call, action, args, ...(env === undefined ? {} : { env }) });
  await step('creating the repository', ['init', '--quiet']);
  // No reflog: it would record this machine's user, host and the time of the build in a kept .git.
  await step('creating the repository', ['config', 'core.logAllRefUpdates', 'false']);
  await step(`copying ${commit.slice(0, 12)} from the cache`, ['fetch', '--quiet', '--no-tags', '--no-write-fetch-head', '--depth=1', '--', `file://${o.repo}`, `+${commit}:refs/kiln/checkout`]);
  await step('setting origin', ['remote', 'add', 'origin', '--', o.call.url]);
  const branch = refName?.startsWith('refs/heads/') === true ? refName.slice('refs/heads/'.length) : undefined;
  await step(`checking out ${commit.slice(0, 12)}`, [...PARALLEL_CHECKOUT, 'checkout', '--quiet', ...(branch === undefined ? ['--detach', commit] : ['-B', branch, commit])]);
  await step('tidying the repository', ['update-ref', '-d', 'refs/kiln/checkout']);
  if (o.keepGitDir && o.subdir === undefined && refName?.startsWith('refs/tags/') === true) await keepTag(o, work, refName);
  if (submodules) {
    const update = ['submodule', 'update', '--init', '--recursive'];
    try {
      await step('updating submodules', [...update, '--depth=1'], o.call.env);
    } catch (err) {
      // A server that refuses a commit that is not a branch tip by id: fetch the submodules whole.
      if (!(err instanceof GitCommandError)) throw err;
      await step('updating submodules', update, o.call.env);
    }
  }
  if (!o.keepGitDir || o.subdir !== undefined) await removeGitDirs(work);
  if (o.subdir !== undefined) {
    const from = join(work, o.subdir);
    if (!(await stat(from)).isDirectory()) throw new OpError(ERROR_CODES.GIT_SOURCE, `git source ${o.call.site.remote}: "${o.subdir}" is not a directory`, { op: o.call.site.op, field: o.call.site.field });
    await copyTree(from, o.target);
  }
}

/**
 * Gives a kept `.git` the tag REF named (its tag object too, when annotated),
 * so that `git describe` there says what the build asked for. Fetched from
 * the remote, as the cache keeps commits only; dropped if the tag has moved
 * since REF was resolved.
 */
async function keepTag(o: CheckoutOptions, work: string, tag: string): Promise<void> {
  const call = { cwd: work, signal: o.call.signal, site: o.call.site };
  await git({ ...call, env: o.call.env, action: `fetching ${tag}`, args: ['fetch', '--quiet', '--no-tags', '--no-write-fetch-head', '--depth=1', '--', o.call.url, `+${tag}:${tag}`] });
  const points = await git({ ...call, action: `reading ${tag}`, args: ['rev-parse', '--verify', '--quiet', `${tag}^{commit}`] });
  if (points !== o.resolved.commit) await git({ ...call, action: `dropping ${tag}`, args: ['update-ref', '-d', tag] });
}

/** Removes every `.git` under `dir` (git never tracks a path named `.git`, so each is a repository or a gitlink). */
async function removeGitDirs(dir: string): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.name === '.git') await rm(path, { recursive: true, force: true });
    else if (entry.isDirectory()) await removeGitDirs(path);
  }
}
