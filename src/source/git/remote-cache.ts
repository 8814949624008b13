/**
 * The bare repositories git sources fetch into: one per remote URL, at
 * ROOT/git/<sha256 of the URL>.git (the URL never carries a password; see
 * llb/git-identifier.ts). Each holds only what builds asked for: a commit
 * is fetched at depth 1 (by its id where the server allows, else by the
 * ref it was resolved from, else everything), kept under refs/kiln/ and
 * never collected by git (gc.auto=0). Every write happens under the
 * repository's lock (remote-lock.ts).
 */
import { createHash } from 'node:crypto';
import { access, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ERROR_CODES, OpError } from '../../errors.js';
import { isFullCommit } from '../../llb/git-identifier.js';
import { git, GitCommandError, type GitSite } from './git-command.js';
import { type HeldLock, lockFile } from './remote-lock.js';

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
  release(): Promise<void>;
}

/** Locks (and on first use creates) the bare repository of `call.url`. */
export async function openRepo(reposDir: string, call: RemoteCall): Promise<LockedRepo> {
  const dir = repoDirOf(reposDir, call.url);
  await mkdir(reposDir, { recursive: true });
  const lock: HeldLock = await lockFile(`${dir}.lock`, call.signal);
  try {
    if (!(await exists(join(dir, 'config')))) {
      const site = call.site;
      await git({ args: ['init', '--quiet', '--bare', '--', dir], signal: call.signal, action: 'creating the cache repository', site });
      // The objects are kiln's to keep or drop (kiln prune), never git's.
      const settings: [string, string][] = [['gc.auto', '0'], ['maintenance.auto', 'false'], ['core.logAllRefUpdates', 'false'], ['kiln.url', call.url]];
      for (const [key, value] of settings) {
        await git({ args: ['config', key, value], cwd: dir, signal: call.signal, action: 'creating the cache repository', site });
      }
    }
  } catch (err) {
    await lock.release();
    throw err;
  }
  return { dir, release: () => lock.release(), [Symbol.asyncDispose]: () => lock.release() };
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
  const args = ['fetch', '--quiet', '--no-tags', '--no-write-fetch-head', ...(depth ? ['--depth=1'] : shallow ? ['--unshallow'] : []), '--', call.url, ...refspecs];
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
export async function fetchCommit(repo: string, call: RemoteCall, resolved: ResolvedRef): Promise<void> {
  const { commit } = resolved;
  if (await hasCommit(repo, call, commit)) return;
  const keep = `refs/kiln/${commit}`;
  const short = commit.slice(0, 12);
  const attempts: [readonly string[], boolean][] = [[[`+${commit}:${keep}`], true]];
  if (resolved.refName !== undefined && resolved.refName !== 'HEAD') attempts.push([[`+${resolved.refName}:${keep}`], true]);
  else if (resolved.refName === 'HEAD') attempts.push([[`+HEAD:${keep}`], true]);
  attempts.push([['+refs/heads/*:refs/kiln/heads/*', '+refs/tags/*:refs/kiln/tags/*'], true], [['+refs/heads/*:refs/kiln/heads/*', '+refs/tags/*:refs/kiln/tags/*'], false]);
  let first: GitCommandError | undefined;
  for (const [refspecs, depth] of attempts) {
    const failed = await tryFetch(repo, call, refspecs, `fetching ${short}`, depth);
    first ??= failed;
    if (await hasCommit(repo, call, commit)) {
      await git({ args: ['update-ref', keep, commit], cwd: repo, signal: call.signal, action: 'keeping the commit', site: call.site });
      return;
    }
  }
  throw first ?? new OpError(ERROR_CODES.GIT_SOURCE, `git source ${call.site.remote}: commit ${commit} is not on the remote`, { op: call.site.op, field: call.site.field });
}
