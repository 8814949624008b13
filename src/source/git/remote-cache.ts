/**
 * The bare repositories git sources fetch into: one per remote URL, at
 * ROOT/git/<sha256 of the URL>.git (the URL never carries a password; see
 * llb/git-identifier.ts). Each holds only what builds asked for: a commit
 * is fetched at depth 1 (by its id where the server allows, else by the
 * ref it was resolved from, else everything), kept under refs/kiln/ and
 * never collected by git (gc.auto=0). Every write happens under the
 * repository's lock (store/file-lock.ts).
 */
import { createHash } from 'node:crypto';
import { access, lstat, mkdir, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ERROR_CODES, OpError } from '../../errors.js';
import { isFullCommit } from '../../llb/git-identifier.js';
import { git, GitCommandError, type GitSite } from './git-command.js';
import { type HeldLock, lockFile, tryLockFile } from '../../store/file-lock.js';

/** A ref resolved on the remote. */
export interface ResolvedRef {
  readonly commit: string;
  /** The full ref name it came from (`refs/heads/main`); undefined when the ref was a commit id. */
  readonly refName?: string;
}

/** What a call on one remote needs. */
export interface RemoteCall {
  readonly url: string;
  /** The op's credentials (credentials.ts). */
  readonly env: Readonly<Record<string, string>>;
  readonly signal: AbortSignal;
  readonly site: GitSite;
}

/** The ref names that `ref` may mean, in git's order of precedence (git-rev-parse(1)). */
function candidates(ref: string): string[] {
  if (ref === 'HEAD' || ref.startsWith('refs/')) return [ref];
  return [ref, `refs/${ref}`, `refs/tags/${ref}`, `refs/heads/${ref}`, `refs/remotes/${ref}`, `refs/remotes/${ref}/HEAD`];
}

/**
 * Picks `ref` out of `git ls-remote` output: the first candidate name that
 * is listed; for an annotated tag, the commit it points to (its `^{}` line).
 */
export function pickRef(lsRemote: string, ref: string): ResolvedRef | undefined {
  const listed = new Map<string, string>();
  for (const line of lsRemote.split('\n')) {
    const tab = line.indexOf('\t');
    if (tab > 0) listed.set(line.slice(tab + 1), line.slice(0, tab));
  }
  for (const name of candidates(ref)) {
    const id = listed.get(`${name}^{}`) ?? listed.get(name);
    if (id !== undefined) return { commit: id, refName: name };
  }
  return undefined;
}

/**
 * Resolves `ref` (undefined: the remote's HEAD) to a commit with one
 * `git ls-remote`, asking only for the names it may mean. A full commit id
 * needs no request.
 */
export async function resolveRef(call: RemoteCall, ref: string | undefined): Promise<ResolvedRef> {
  if (ref !== undefined && isFullCommit(ref)) return { commit: ref };
  const wanted = ref ?? 'HEAD';
  const patterns = ref === undefined ? ['HEAD'] : [ref, `${ref}^{}`];
  const out = await git({ args: ['ls-remote', '--', call.url, ...patterns], env: call.env, signal: call.signal, action: `resolving ${wanted}`, site: call.site });
  const found = pickRef(out, wanted);
  if (found === undefined) {
    throw new OpError(ERROR_CODES.GIT_SOURCE, `git source ${call.site.remote}: no branch or tag "${wanted}" on the remote (a commit must be given as its full id)`, {
      op: call.site.op,
      field: call.site.field,
    });
  }
  return found;
}

/** The bare repository of `url` under `reposDir`. */
export function repoDirOf(reposDir: string, url: string): string {
  return join(reposDir, `${createHash('sha256').update(url).digest('hex')}.git`);
}

/** A bare repository, locked for this process while held. */
export interface LockedRepo extends AsyncDisposable {
  readonly dir: string;
  /** Made by this call: it holds nothing yet. */
  readonly created: boolean;
  release(): Promise<void>;
}

/** A value for a git config file, quoted. */
function configValue(value: string): string {
  return `"${value.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
}

/**
 * Writes an empty bare repository at `dir` (gitrepository-layout(5): HEAD,
 * config, objects/ and refs/ are all git needs), without the `git init`
 * process and the sample hooks it copies. The config is renamed into place
 * last, whole: `kiln.url` in it marks a repository that was made completely.
 */
async function initBare(dir: string, url: string): Promise<void> {
  await Promise.all(['objects/info', 'objects/pack', 'refs/heads', 'refs/tags'].map((sub) => mkdir(join(dir, sub), { recursive: true })));
  await writeFile(join(dir, 'HEAD'), 'ref: refs/heads/main\n');
  await writeFile(
    join(dir, 'config.tmp'),
    [
      '[core]',
      '\trepositoryformatversion = 0',
      '\tfilemode = true',
      '\tbare = true',
      // No reflogs: nothing here is a user's history.
      '\tlogAllRefUpdates = false',
      // The objects are kiln's to keep or drop, never git's to collect.
      '[gc]',
      '\tauto = 0',
      '[maintenance]',
      '\tauto = false',
      '[kiln]',
      `\turl = ${configValue(url)}`,
      '',
    ].join('\n'),
  );
  await rename(join(dir, 'config.tmp'), join(dir, 'config'));
}

/** The lock files a git killed during a fetch into a bare repository leaves. */
const STALE_GIT_LOCKS = ['shallow.lock', 'packed-refs.lock', 'config.lock', 'HEAD.lock'];

/** Locks (and on first use creates) the bare repository of `call.url`. */
export async function openRepo(reposDir: string, call: RemoteCall): Promise<LockedRepo> {
  const dir = repoDirOf(reposDir, call.url);
  await mkdir(reposDir, { recursive: true });
  const lock: HeldLock = await lockFile(`${dir}.lock`, call.signal);
  let created = false;
  try {
    // The lock file's mtime is the repository's last use (kiln du, kiln prune --keep-duration).
    const now = new Date();
    await utimes(`${dir}.lock`, now, now);
    // `kiln.url` is written last: a repository without it was cut short, and is made again.
    const config = await readFile(join(dir, 'config'), 'utf8').catch(() => '');
    if (!config.includes('[kiln]')) {
      await rm(dir, { recursive: true, force: true });
      await initBare(dir, call.url);
      created = true;
    } else {
      // Every git that writes here runs under this lock, so a git lock file now is a killed git's:
      // left in place, shallow.lock would refuse every shallow fetch, and each would fetch everything.
      await Promise.all(STALE_GIT_LOCKS.map((name) => rm(join(dir, name), { force: true })));
    }
  } catch (err) {
    await lock.release();
    throw err;
  }
  return { dir, created, release: () => lock.release(), [Symbol.asyncDispose]: () => lock.release() };
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** Whether the repository has `commit` (with its tree: every fetch here brings whole trees). */
async function hasCommit(repo: string, call: RemoteCall, commit: string): Promise<boolean> {
  try {
    await git({ args: ['cat-file', '-e', `${commit}^{commit}`], cwd: repo, signal: call.signal, action: 'looking up a commit', site: call.site });
    return true;
  } catch (err) {
    if (err instanceof GitCommandError) return false;
    throw err;
  }
}

/**
 * Fetches `refspec` (shallow, then whole if the server refuses shallow);
 * resolves false when git fails, so the caller can try another way.
 */
async function tryFetch(repo: string, call: RemoteCall, refspecs: readonly string[], action: string, depth: boolean): Promise<GitCommandError | undefined> {
  const shallow = await exists(join(repo, 'shallow'));
  // fetch.unpackLimit=1: the objects arrive as one pack, in place only once whole, never as loose
  // objects one by one, of which a killed fetch would leave a commit without its files.
  const args = ['-c', 'fetch.unpackLimit=1', 'fetch', '--quiet', '--no-tags', '--no-write-fetch-head', ...(depth ? ['--depth=1'] : shallow ? ['--unshallow'] : []), '--', call.url, ...refspecs];
  try {
    await git({ args, cwd: repo, env: call.env, signal: call.signal, action, site: call.site });
    return undefined;
  } catch (err) {
    if (err instanceof GitCommandError) return err;
    throw err;
  }
}

/**
 * Makes sure the repository holds `resolved.commit`: by its id (protocol v2
 * servers allow it), else by the ref it was resolved from (when the ref has
 * not moved since), else every branch and tag, whole.
 */
export async function fetchCommit(repo: LockedRepo, call: RemoteCall, resolved: ResolvedRef): Promise<void> {
  const { commit } = resolved;
  if (!repo.created && (await hasCommit(repo.dir, call, commit))) return;
  const keep = `refs/kiln/${commit}`;
  const short = commit.slice(0, 12);
  // By id: when it works, the commit is in and kept by `keep`, nothing to check.
  const first = await tryFetch(repo.dir, call, [`+${commit}:${keep}`], `fetching ${short}`, true);
  if (first === undefined) return;
  const attempts: [readonly string[], boolean][] = [];
  if (resolved.refName !== undefined) attempts.push([[`+${resolved.refName}:${keep}`], true]);
  attempts.push([['+refs/heads/*:refs/kiln/heads/*', '+refs/tags/*:refs/kiln/tags/*'], true], [['+refs/heads/*:refs/kiln/heads/*', '+refs/tags/*:refs/kiln/tags/*'], false]);
  let fetchedAll = false;
  for (const [refspecs, depth] of attempts) {
    const failed = await tryFetch(repo.dir, call, refspecs, `fetching ${short}`, depth);
    if (await hasCommit(repo.dir, call, commit)) {
      await git({ args: ['update-ref', keep, commit], cwd: repo.dir, signal: call.signal, action: 'keeping the commit', site: call.site });
      return;
    }
    fetchedAll = failed === undefined && !depth;
  }
  // Every branch and tag, whole, and no such commit: say so, rather than quote the server's refusal of the id.
  if (fetchedAll && resolved.refName === undefined) {
    throw new OpError(ERROR_CODES.GIT_SOURCE, `git source ${call.site.remote}: no commit ${commit} on the remote (not in the history of any branch or tag)`, { op: call.site.op, field: call.site.field });
  }
  throw first;
}

/** One bare repository of the cache, as `kiln du` lists it. */
export interface GitRepoUsage {
  /** The directory's name under the repositories' folder. */
  readonly id: string;
  /** The remote it holds (never with a password). */
  readonly url: string;
  /** Bytes of its files. */
  readonly size: number;
  readonly createdAt: number;
  readonly lastUsedAt: number;
}

async function treeSize(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const path = join(dir, entry.name);
    total += entry.isDirectory() ? await treeSize(path) : ((await lstat(path).catch(() => undefined))?.size ?? 0);
  }
  return total;
}

/** Every bare repository under `reposDir` with its size and times. */
export async function gitRepoUsage(reposDir: string): Promise<GitRepoUsage[]> {
  const repos: GitRepoUsage[] = [];
  for (const name of await readdir(reposDir).catch(() => [])) {
    if (!name.endsWith('.git')) continue;
    const dir = join(reposDir, name);
    const made = await stat(dir).catch(() => undefined);
    if (made === undefined || !made.isDirectory()) continue;
    const used = await stat(`${dir}.lock`).catch(() => made);
    const url = /^\s*url = "(.*)"$/m.exec(await readFile(join(dir, 'config'), 'utf8').catch(() => ''))?.[1] ?? '';
    repos.push({ id: name, url: url.replaceAll('\\"', '"').replaceAll('\\\\', '\\'), size: await treeSize(dir), createdAt: made.birthtimeMs || made.ctimeMs, lastUsedAt: used.mtimeMs });
  }
  return repos;
}

/** Removes the repository `id` unless a build holds it now; resolves whether it was removed. */
export async function removeGitRepo(reposDir: string, id: string): Promise<boolean> {
  const dir = join(reposDir, id);
  const lock = await tryLockFile(`${dir}.lock`, new AbortController().signal);
  if (lock === undefined) return false;
  try {
    await rm(dir, { recursive: true, force: true });
  } finally {
    await lock.release();
  }
  // The lock file stays: removing it while another process waits on it would let a third lock a new file.
  return true;
}
