/**
 * git sources: `git://`, `git+https://` and `git+file://` identifiers (see
 * llb/git-identifier.ts), fetched with the real `git` into a bare cache
 * repository per remote (remote-cache.ts) and checked out into a snapshot
 * (checkout.ts).
 *
 * The cache key is the commit the ref resolves to (one `git ls-remote`; none
 * for a full commit id), with the subdir, `keepgitdir` and the mtime the
 * files get: an unchanged branch is a cache hit without a fetch, and a new
 * commit reruns only what depends on this op. Credentials come from the
 * build's secrets and ssh agents only (credentials.ts) and never enter the
 * key, a file under the root or a message.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { CacheKey } from '../../digest.js';
import { digestOf } from '../../digest.js';
import { ERROR_CODES, KilnError, OpError } from '../../errors.js';
import { GIT_SCHEMES, type GitSourceSpec, isFullCommit, isGitSpecProblem, parseGitSource } from '../../llb/git-identifier.js';
import { opDisplayName } from '../../llb/op-name.js';
import { currentOwner, isOwnerAlive } from '../../owner.js';
import type { ProgressSink } from '../../progress/types.js';
import { identifierSite, type Source, type SourceContext, type SourceInstance, type SourceOpOf } from '../types.js';
import { checkout } from './checkout.js';
import { checkCredentials, credentialAttrs, missingSecrets, openCredentials } from './credentials.js';
import { tcpNodelayEnv } from './tcp-proxy.js';
import type { GitSite } from './git-command.js';
import { fetchCommit, openRepo, type RemoteCall, type ResolvedRef, resolveRef } from './remote-cache.js';

/**
 * The mtime of every checked-out entry without SOURCE_DATE_EPOCH:
 * 1980-01-01T00:00:00Z, the earliest time a zip archive can hold, so
 * tools that package the files do not refuse them.
 */
export const DEFAULT_GIT_MTIME = 315532800;

/** SOURCE_DATE_EPOCH of kiln's environment when it is a whole number of seconds, else the constant. */
function checkoutMtime(): number {
  const epoch = process.env['SOURCE_DATE_EPOCH'];
  return epoch !== undefined && /^\d{1,12}$/.test(epoch) ? Number(epoch) : DEFAULT_GIT_MTIME;
}

/** The op's parsed identifier (the loader has already refused one that does not parse). */
function specOf(op: SourceOpOf): GitSourceSpec {
  const { identifier, attrs } = op.body.source;
  const parsed = parseGitSource(identifier, Object.hasOwn(attrs, 'git.fullurl') ? attrs['git.fullurl'] : undefined);
  if (isGitSpecProblem(parsed)) {
    const site = identifierSite(op);
    throw new OpError(ERROR_CODES.GIT_SOURCE, parsed.message, { op: site.op, field: parsed.field === 'identifier' ? site.field : `ops.${op.name}.source.attrs["${parsed.field}"]` });
  }
  return parsed;
}

function attrField(op: SourceOpOf, attr: string): string {
  return attr === 'identifier' ? identifierSite(op).field : `ops.${op.name}.source.attrs["${attr}"]`;
}

/** Reports one step of the op as a status line that completes. */
async function step<T>(progress: ProgressSink, vertex: string, id: string, work: () => Promise<T>): Promise<T> {
  const started = new Date().toISOString();
  progress.emit({ type: 'status', vertex, id, current: 0, total: 1, started });
  const result = await work();
  progress.emit({ type: 'status', vertex, id, current: 1, total: 1, started, completed: new Date().toISOString() });
  return result;
}

/** The value of a settled promise already known to be fulfilled. */
function fulfilled<T>(result: PromiseSettledResult<T>): T {
  if (result.status === 'rejected') throw result.reason;
  return result.value;
}

/** A private scratch directory under `reposDir`, named for this process; leftovers of dead processes are removed first. */
async function scratchDir(reposDir: string): Promise<string> {
  const parent = join(reposDir, 'tmp');
  await mkdir(parent, { recursive: true });
  for (const name of await readdir(parent)) {
    if (!isOwnerAlive(name)) await rm(join(parent, name), { recursive: true, force: true });
  }
  const dir = join(parent, `${currentOwner()}-${randomBytes(6).toString('hex')}`);
  await mkdir(dir);
  return dir;
}

function resolveGit(op: SourceOpOf, ctx: SourceContext): SourceInstance {
  const spec = specOf(op);
  const { attrs } = op.body.source;
  const creds = credentialAttrs(attrs);
  const fieldSite = { op: op.name, field: (attr: string) => attrField(op, attr) };
  // An ssh agent not given is refused here, before anything runs: solve() resolves every source op first.
  checkCredentials(spec, creds, ctx, fieldSite);
  const reposDir = ctx.gitRepos;
  if (reposDir === undefined) throw new KilnError(ERROR_CODES.INTERNAL, `git source op "${op.name}": the solve gave no directory for git repositories`);
  const keepGitDir = attrs['git.keepgitdir'] === 'true';
  const mtime = checkoutMtime();
  const missing = missingSecrets(spec, creds, ctx.secrets);
  const site: GitSite = { ...identifierSite(op), remote: spec.url, ...(missing.length === 0 ? {} : { authHint: `${missing.join(' and ')}, which the build was not given` }) };
  // git.checksum: the commit the ref must be at (a prefix of its id), as BuildKit checks it.
  const checksum = attrs['git.checksum']?.toLowerCase();
  const skipSubmodules = attrs['git.skipsubmodules'] === 'true';
  let resolved: Promise<ResolvedRef> | undefined;

  /** `ref`, once it is known to be the commit git.checksum names. */
  const checked = (ref: ResolvedRef): ResolvedRef => {
    if (checksum === undefined || ref.commit.startsWith(checksum)) return ref;
    throw new OpError(ERROR_CODES.GIT_SOURCE, `git source ${spec.url}: ${spec.ref ?? 'HEAD'} is at commit ${ref.commit}, but git.checksum expects ${checksum}`, {
      op: op.name,
      field: attrField(op, 'git.checksum'),
    });
  };

  /** Runs `work` with the op's credentials open (temp files removed after). */
  const withCall = async <T>(signal: AbortSignal, work: (call: RemoteCall) => Promise<T>): Promise<T> => {
    await using credentials = await openCredentials(spec, creds, ctx, fieldSite, { makeTempDir: () => scratchDir(reposDir) });
    return await work({ url: spec.url, env: { ...(await tcpNodelayEnv(reposDir)), ...credentials.env }, signal, site });
  };
  const resolveOnce = (signal: AbortSignal, progress: ProgressSink): Promise<ResolvedRef> =>
    (resolved ??= step(progress, op.digest, `resolving ${spec.ref ?? 'HEAD'}`, () => withCall(signal, (call) => resolveRef(call, spec.ref))).then(checked));

  return {
    async cacheKey(signal, progress) {
      // A full commit id in git.checksum is the key without asking the remote (the
      // snapshot checks the ref against it); a kept .git also holds the ref's name, which only the remote knows.
      const ref = checksum !== undefined && isFullCommit(checksum) && !keepGitDir ? { commit: checksum } : await resolveOnce(signal, progress);
      return digestOf({
        source: 'git',
        commit: ref.commit,
        subdir: spec.subdir ?? '',
        keepGitDir,
        mtime,
        // Only a kept .git holds the remote and the branch checked out.
        ...(keepGitDir ? { remote: spec.url, refName: ref.refName ?? '' } : {}),
        // Only when set, so that the keys of every other checkout stay as they were.
        ...(skipSubmodules ? { skipSubmodules } : {}),
      }) as string as CacheKey;
    },
    async snapshot(cache, signal, progress) {
      const ref = await resolveOnce(signal, progress);
      try {
        return await withCall(signal, async (call) => {
          // Independent of each other, so started together: the scratch dir,
          // the snapshot, and the repository's lock (and, on first use, the repository).
          const [scratch, mutable, repo] = await Promise.allSettled([scratchDir(reposDir), cache.newMutable(null, { description: opDisplayName(op) }), openRepo(reposDir, call)]);
          let committed = false;
          try {
            const [dir, snap, locked] = [fulfilled(scratch), fulfilled(mutable), fulfilled(repo)];
            await step(progress, op.digest, `fetching ${ref.commit.slice(0, 12)}`, () => fetchCommit(locked, call, ref));
            {
              await using target = await snap.mount();
              await step(progress, op.digest, 'checking out', () =>
                checkout({ repo: locked.dir, resolved: ref, ...(spec.subdir === undefined ? {} : { subdir: spec.subdir }), keepGitDir, skipSubmodules, target: target.path, scratch: dir, mtime, call }),
              );
            }
            const result = await snap.commit();
            committed = true;
            return result;
          } finally {
            // LIFO: the lock, the snapshot (unless committed), the scratch dir.
            if (repo.status === 'fulfilled') await repo.value.release();
            if (mutable.status === 'fulfilled' && !committed) await mutable.value.release();
            if (scratch.status === 'fulfilled') await rm(scratch.value, { recursive: true, force: true });
          }
        });
      } catch (err) {
        if (err instanceof KilnError || signal.aborted) throw err;
        throw new OpError(ERROR_CODES.GIT_SOURCE, `git source ${spec.url}: ${err instanceof Error ? err.message : String(err)}`, { ...identifierSite(op), cause: err });
      }
    },
  };
}

/** One Source per git identifier scheme, all the same implementation. */
export const gitSources: readonly Source[] = GIT_SCHEMES.map((scheme) => ({
  scheme,
  check: (op) => void specOf(op),
  resolve: resolveGit,
}));
