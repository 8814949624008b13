/**
 * The programmatic API: solve a definition into a result ref, and export it.
 * The CLI is a thin layer over these functions.
 */
import type { CacheManager, ResultRef } from '../cache/types.js';
import { type CacheImportSpec, type CacheTarget, localCacheTarget, registryCacheTarget } from '../content/cache-target.js';
import { parseReference } from '../content/reference.js';
import type { CacheKey } from '../digest.js';
import type { CacheExportPlan, CacheExportSpec, CacheMountSource, CacheRecordSource } from '../exporter/types.js';
import { type ImportedCaches, importCaches } from '../ops/cache-import.js';
import { snapshotCacheMount } from '../cache/cache-mount-snapshot.js';
import type { RegistryClient } from '../content/registry/client.js';
import type { ImageConfig } from '../content/types.js';
import { ERROR_CODES, KilnError, MissingGrantError, OpError } from '../errors.js';
import { loadDefinition } from '../llb/load.js';
import type { RawDefinition } from '../llb/json-types.js';
import { Writable } from 'node:stream';
import type { Definition, ExecOp, Op } from '../llb/types.js';
import { buildGraph, type NoCache } from '../ops/graph.js';
import { noExecutorError } from '../ops/exec-op.js';
import { missingSecretError, type Secrets, secretUses } from '../ops/exec/secrets.js';
import { checkSshMounts } from '../ops/exec/ssh.js';
import { emptyDir } from '../ops/inputs.js';
import { resultCache } from '../ops/result-cache.js';
import { rerunExplainer } from '../ops/rerun-history.js';
import type { FailedExec } from '../ops/types.js';
import type { ExportableResult, ResultImage } from '../exporter/types.js';
import { hostPlatform } from '../llb/load.js';
import { NULL_PROGRESS, type ProgressSink } from '../progress/types.js';
import { teeProgress } from '../progress/tee.js';
import type { StepLogs } from '../progress/step-logs.js';
import { BuildRecorder } from '../history/recorder.js';
import type { DebugShellSpec } from '../history/record.js';
import { solve as solveGraph } from '../solver/solve.js';
import type { MountedDir } from '../snapshot/types.js';
import { imagePlatform } from '../source/image/resolve.js';
import type { ImageContext, ResolvedImage } from '../source/image/types.js';
import { DEFAULT_SOURCES, type SourceRegistry } from '../source/registry.js';
import type { SourceBindings, SourceInstance } from '../source/types.js';
import { rootLayout } from '../store/layout.js';
import type { Worker } from '../worker/types.js';
import type { Session } from './session.js';

export interface SolveOptions {
  /** `local://NAME` bindings: NAME → host directory. */
  readonly locals?: Readonly<Record<string, string>>;
  /** Max ops running at once (default: one per 256 MiB of memory, at least the CPU count, and ops other than exec at most the CPU count; a value given caps every op alike). */
  readonly parallelism?: number;
  readonly signal?: AbortSignal;
  readonly progress?: ProgressSink;
  /** Run on this worker instead of the default one. */
  readonly worker?: string;
  /** Entitlements granted to the build (`--allow`); exec ops that need others are refused. */
  readonly allow?: readonly Entitlement[];
  /**
   * Build secrets by id (`--secret`), for exec ops' secret mounts and
   * secretEnv. A build that needs one not given here is refused before
   * anything runs. Values never enter the cache, a snapshot or progress.
   */
  readonly secrets?: Readonly<Record<string, Uint8Array>>;
  /** SSH agent sockets by id (`--ssh`), for exec ops' ssh mounts. */
  readonly ssh?: Readonly<Record<string, string>>;
  /** `oci-layout://NAME` bindings: NAME → OCI image layout directory (`--oci-layout`). */
  readonly ociLayouts?: Readonly<Record<string, string>>;
  /** Registry hosts (`host:port`) spoken to over plain HTTP (`--insecure-registry`). */
  readonly insecureRegistries?: readonly string[];
  /** The sources by scheme (default: local, docker-image, oci-layout). */
  readonly sources?: SourceRegistry;
  /** Rerun every op (`true`, `--no-cache`) or the named ops and their descendants (`--no-cache-filter`); see NoCache. */
  readonly noCache?: NoCache;
  /**
   * An OCI image config for image outputs, as a frontend returns it beside
   * its Definition (`containerimage.config`; `--image-config`): the result's
   * layers and platform are set over it.
   */
  readonly imageConfig?: ImageConfig;
  /**
   * The build history's record of this solve (see Session.history): its id
   * (default a new one; a caller that names the record in messages picks
   * it first) and the definition file it names. `false`: no record.
   */
  readonly history?: false | { readonly id?: string; readonly definition?: string };
  /**
   * Called when an exec op's process fails, with the step kept as the
   * process left it: `failure.shell({ terminal })` opens an interactive
   * shell there (what `kiln build -i` does). Everything kept is released
   * when the hook returns, and the build fails with `failure.error`. Other
   * ops go on meanwhile; the solve does not end before the hook returns.
   */
  readonly onExecError?: (failure: FailedExec) => Promise<void>;
  /**
   * Caches to ask, in order, for each op the local cache lacks, before it
   * runs (`--import-cache`), and for the contents of a cache mount this root
   * does not have yet. One that cannot be read is a warning and the build
   * runs without it, unless its spec says `ignoreError: false`: then the
   * solve fails with a CacheImportError (E_CACHE_IMPORT).
   */
  readonly cacheImports?: readonly CacheImportSpec[];
  /** Caches to write the results to (`--export-cache`); exportResult writes them after the outputs. */
  readonly cacheExports?: readonly CacheExportSpec[];
}

/** What a build may be allowed beyond the sandbox. */
export const ENTITLEMENTS = ['network.host', 'security.insecure'] as const;
export type Entitlement = (typeof ENTITLEMENTS)[number];

export { checkOutputs } from '../exporter/destination.js';
export { exportResult, type ExportResultOptions } from '../exporter/export.js';
export type { CacheExportSpec, CacheMode, ImageOutputOptions, OutputSpec } from '../exporter/types.js';
export type { CacheImportSpec } from '../content/cache-target.js';
export type { CacheReport, ExportReport, OutputReport } from '../exporter/export.js';

/**
 * A solved build: the result ref, held until released, with what its
 * outputs need of the solve (the image it makes, kiln's stores, progress).
 */
export interface SolveResult extends ExportableResult, AsyncDisposable {
  /** The result; null when it is the empty filesystem. */
  readonly ref: ResultRef;
  /** The platform, `image.config` and resolved `image.base` that image outputs build from. */
  readonly image: ResultImage;
  /** The id of the solve's record in the build history (absent when none was kept). */
  readonly historyId?: string;
  /** Mounts the result read-only (an empty directory for scratch). */
  mount(): Promise<MountedDir>;
  release(): Promise<void>;
}

/**
 * Solves `definition` on the session's workers. Release the result when done.
 * Unless the session keeps no history (or `options.history` is false), the
 * solve is recorded in it, with the full output of every step, once the
 * checks before anything runs have passed.
 */
export async function solve(session: Session, definition: Definition | RawDefinition, options: SolveOptions = {}): Promise<SolveResult> {
  const def = isLoaded(definition) ? definition : loadDefinition(definition);
  const selectFor = (constraints: readonly string[]) =>
    session.workers.select({ ...(options.worker === undefined ? {} : { id: options.worker }), constraints });
  const defaultWorker = await selectFor([]);
  const bindings: SourceBindings = {
    locals: new Map(Object.entries(options.locals ?? {})),
    ociLayouts: new Map(Object.entries(options.ociLayouts ?? {})),
  };
  const sources = options.sources ?? DEFAULT_SOURCES;
  const secrets: Secrets = new Map(Object.entries(options.secrets ?? {}));
  const ssh = new Map(Object.entries(options.ssh ?? {}));
  const images = imageContext(session, { ...options, insecureRegistries: [...(options.insecureRegistries ?? []), ...insecureCacheHosts(options)] });
  const sourceStores = { localHashes: session.localHashes, httpValidators: session.httpValidators, scratchDir: rootLayout(session.root).tmp };
  // Everything that can be refused is refused before anything runs: workers
  // for constraints, exec ops without an executor, missing secrets, source
  // ops their source cannot serve (an unknown scheme, an unbound name).
  const workers = new Map<string, Worker>();
  // One instance per source op digest: ops the graph merges share one.
  const instances = new Map<string, SourceInstance>();
  for (const op of def.ops.values()) {
    const worker = op.constraints.length === 0 ? defaultWorker : await withOpName(op, () => selectFor(op.constraints));
    workers.set(op.name, worker);
    if (op.body.kind === 'exec') {
      if (worker.executor === undefined) throw noExecutorError(op, worker.id);
      checkEntitlements(op, op.body.exec, options.allow ?? []);
      const missing = secretUses(op.name, op.body.exec).find((use) => !use.optional && !secrets.has(use.id));
      if (missing !== undefined) throw missingSecretError(op.name, missing);
      checkSshMounts(op.name, op.body.exec, ssh);
    }
    if (op.body.kind === 'source') {
      const sourceOp = { ...op, body: op.body };
      sources.check(sourceOp, bindings);
      if (!instances.has(op.digest)) instances.set(op.digest, sources.resolve(sourceOp, { ...images, ...sourceStores, gitRepos: rootLayout(session.root).git, bindings, secrets, ssh }));
    }
  }
  const source = (op: Op): SourceInstance => {
    const instance = instances.get(op.digest);
    if (instance === undefined) throw new KilnError(ERROR_CODES.INTERNAL, `source op "${op.name}" was not checked`);
    return instance;
  };
  const recording = options.history !== false && session.history.enabled;
  // The record starts once the graph is made (the last refusal); exec ops open their logs only when they run.
  let recorder: BuildRecorder | undefined;
  const logs: StepLogs = {
    open: (digest) => {
      // No record (it could not be started): the full output goes nowhere, the live stream still has it.
      if (recorder === undefined) return new Writable({ write: (_chunk, _encoding, done) => done() });
      return recorder.open(digest);
    },
  };
  const opsByDigest = new Map([...def.ops.values()].map((op) => [op.digest as string, op]));
  const imports = importedCaches(options, images, defaultWorker.cache);
  // Each vertex's key, for --export-cache (inputs first: the order the solver keys them).
  const keys = new Map<string, { readonly name: string; readonly key: CacheKey }>();
  const target = buildGraph(
    def,
    (op) => ({
      worker: workers.get(op.name) ?? defaultWorker,
      secrets,
      ssh,
      source,
      logger: session.logger,
      ...(recording ? { logs } : {}),
      ...(options.onExecError === undefined ? {} : { onExecError: options.onExecError }),
      ...(imports === undefined ? {} : { seedCacheMount: (id: string, dir: string, signal: AbortSignal) => imports.seedMount(id, dir, { signal, vertex: op.digest }) }),
    }),
    {
      ...(options.noCache === undefined ? {} : { noCache: options.noCache }),
      onKey: (vertex, key) => {
        if (options.cacheExports !== undefined && options.cacheExports.length > 0) keys.set(vertex.digest, { name: vertex.name, key });
        const op = opsByDigest.get(vertex.digest);
        recorder?.noteKey(vertex.digest, vertex.name, key, op === undefined ? undefined : { name: op.name, shell: debugShellSpec(op) });
      },
    },
  );
  // A history that cannot be started (a full disk) costs the build its record, never the build.
  recorder = recording
    ? await BuildRecorder.start(session.history, { ...options.history, logger: session.logger }).catch((err: unknown) => {
        session.logger.warn({ err }, 'cannot start the build record; this build is not kept in the history');
        return undefined;
      })
    : undefined;
  const signal = options.signal ?? new AbortController().signal;
  const explain = rerunExplainer({
    definition: def,
    history: session.rerunHistory,
    ...(options.noCache === undefined ? {} : { noCache: options.noCache }),
    files: (op) => instances.get(op.digest)?.fileSignature?.(),
  });
  const userProgress = options.progress ?? NULL_PROGRESS;
  let ref: ResultRef;
  try {
    await imports?.check(signal);
    ref =
      target === null
        ? null
        : await solveGraph(target, {
            cache: resultCache(defaultWorker.cache),
            ...(imports === undefined ? {} : { remote: imports.results }),
            ...(options.parallelism === undefined ? {} : { parallelism: options.parallelism }),
            signal,
            progress: recorder === undefined ? userProgress : teeProgress(userProgress, recorder),
            explain,
          });
  } catch (err) {
    await recorder?.finish(signal.aborted ? signal.reason : err);
    throw err;
  } finally {
    // What ran (or loaded) before a failure is remembered too: the next build compares with it.
    try {
      explain.flush();
    } catch (err) {
      session.logger.warn({ err }, 'could not record what the build was made of (rerun reasons)');
    }
    // What keying left that no snapshot took (a download whose result was cached).
    await Promise.all([...instances.values()].map((instance) => instance.release?.() ?? Promise.resolve()));
  }
  await recorder?.finish();
  let base: ResolvedImage | undefined;
  try {
    // `image.base` was resolved while keying when the result is built on it (the instance keeps it).
    const baseOp = def.image?.base === undefined ? undefined : def.ops.get(def.image.base);
    const image = baseOp === undefined ? undefined : source(baseOp).image;
    if (baseOp !== undefined && image === undefined) throw new KilnError(ERROR_CODES.INTERNAL, `image.base "${baseOp.name}" is not an image source`);
    base = await image?.(signal);
  } catch (err) {
    await ref?.release();
    throw err;
  }
  let outputs = 0;
  let released = false;
  const mountSnapshots = cacheMountSnapshots(def, defaultWorker.cache, options.progress ?? NULL_PROGRESS, signal);
  const release = async (): Promise<void> => {
    if (released) return;
    released = true;
    await mountSnapshots.release();
    await ref?.release();
  };
  const registry = (insecureHosts?: readonly string[]): Promise<RegistryClient> =>
    insecureHosts === undefined || insecureHosts.length === 0 ? images.registry() : registryClient(session, insecureHosts);
  const cacheExports = options.cacheExports === undefined || options.cacheExports.length === 0
    ? undefined
    : { ...exportPlan(options.cacheExports, defaultWorker.cache, keys, target?.vertex.digest), mounts: mountSnapshots.take };
  return {
    ref,
    ...(recorder === undefined ? {} : { historyId: recorder.id }),
    ...(cacheExports === undefined ? {} : { cacheExports }),
    image: {
      platform: imagePlatform((def.result === null ? undefined : def.ops.get(def.result.op))?.platform ?? hostPlatform()),
      ...(def.image === undefined ? {} : { config: def.image.config }),
      ...(base === undefined ? {} : { base: { name: base.name, config: base.config } }),
      created: new Date().toISOString(),
      ...(options.imageConfig === undefined ? {} : { given: options.imageConfig }),
    },
    environment: {
      content: session.content,
      registry,
      progress: options.progress ?? NULL_PROGRESS,
      protect: { root: session.root, locals: bindings.locals },
      layers: new Map(),
      nextOutput: () => outputs++,
    },
    mount: () => (ref === null ? emptyDir() : ref.mount()),
    release,
    [Symbol.asyncDispose]: release,
  };
}

/** Registry hosts cache specs reach over plain HTTP (`registry.insecure=true`). */
function insecureCacheHosts(options: SolveOptions): string[] {
  const specs = [...(options.cacheImports ?? []), ...(options.cacheExports ?? [])];
  return specs.flatMap((spec) => (spec.type === 'registry' && spec.insecure === true ? [parseReference(spec.ref).domain] : []));
}

/** The solve's imported caches (none without --import-cache). */
function importedCaches(options: SolveOptions, images: ImageContext, cache: CacheManager): ImportedCaches | undefined {
  const specs = options.cacheImports ?? [];
  if (specs.length === 0) return undefined;
  const sources = specs.map((spec) => ({ target: cacheTarget(spec, images), ...(spec.ignoreError === undefined ? {} : { ignoreError: spec.ignoreError }) }));
  return importCaches(sources, { cache, content: images.content, progress: options.progress ?? NULL_PROGRESS });
}

/**
 * The cache mounts an export carries (`cache-mounts=`), snapshotted at the
 * first export that asks (after the build, so the state the build left)
 * and shared by later ones, so two exports compress each mount once. `all`
 * is every cache id the definition's exec ops name; a named id this root
 * does not have is a warning. Released with the result.
 */
function cacheMountSnapshots(def: Definition, cache: CacheManager, progress: ProgressSink, signal: AbortSignal) {
  const used = [...new Set([...def.ops.values()].flatMap((op) => (op.body.kind === 'exec' ? op.body.exec.mounts.flatMap((m) => (m.type === 'cache' ? [m.cache.id] : [])) : [])))];
  const taken = new Map<string, Promise<CacheMountSource | undefined>>();
  const take = async (selection: readonly string[] | 'all'): Promise<readonly CacheMountSource[]> => {
    const ids = selection === 'all' ? used : selection;
    const mounts = await Promise.all(
      ids.map((id) => {
        let snapshot = taken.get(id);
        if (snapshot === undefined) {
          snapshot = snapshotCacheMount(cache, id, signal).then((ref) => {
            if (ref !== undefined) return { id, ref };
            if (selection !== 'all') progress.emit({ type: 'warning', message: `cache-mounts: this root has no cache mount "${id}"; it is not exported`, timestamp: new Date().toISOString() });
            return undefined;
          });
          taken.set(id, snapshot);
        }
        return snapshot;
      }),
    );
    return mounts.filter((m) => m !== undefined);
  };
  const release = async (): Promise<void> => {
    const all = await Promise.allSettled([...taken.values()]);
    taken.clear();
    for (const settled of all.reverse()) if (settled.status === 'fulfilled') await settled.value?.ref.release();
  };
  return { take, release };
}

/** Where an import reads from. A reference that does not parse is the cache's failure (a warning), found when it is first asked. */
function cacheTarget(spec: CacheImportSpec, images: ImageContext): CacheTarget {
  if (spec.type === 'local') return localCacheTarget(spec.src, spec.tag ?? 'latest', images.content);
  try {
    return registryCacheTarget(parseReference(spec.ref), () => images.registry(), images.content);
  } catch (err) {
    const fail = (): Promise<never> => Promise.reject(err instanceof Error ? err : new Error(String(err)));
    return { shown: `registry ${spec.ref}`, load: fail, fetchBlob: fail, pushBlob: fail, pushManifest: fail };
  }
}

/**
 * The records --export-cache writes: the result vertex's (min), or every
 * keyed vertex's that the local cache holds (max; those below a cache hit
 * are there when an earlier build made them). Refs are held until release.
 */
function exportPlan(
  specs: readonly CacheExportSpec[],
  cache: CacheManager,
  keys: ReadonlyMap<string, { readonly name: string; readonly key: CacheKey }>,
  targetDigest: string | undefined,
): Omit<CacheExportPlan, 'mounts'> {
  return {
    specs,
    async records(mode) {
      const all = mode === 'max' ? [...keys.values()] : [targetDigest === undefined ? undefined : keys.get(targetDigest)].filter((k) => k !== undefined);
      // Two vertices with one key (the same op under two names) are one record.
      const wanted = [...new Map(all.map((k) => [k.key, k])).values()];
      const records: CacheRecordSource[] = [];
      const release = async (): Promise<void> => {
        for (const record of records.splice(0).reverse()) for (const ref of record.outputs) await ref?.release();
      };
      try {
        for (const { name, key } of wanted) {
          const outputs = await cache.lookup(key);
          if (outputs !== undefined) records.push({ key, op: name, outputs });
        }
      } catch (err) {
        await release();
        throw err;
      }
      return { records, release };
    },
  };
}

/** The content store and registry client (loaded at first use) of one solve. */
function imageContext(session: Session, options: SolveOptions): ImageContext {
  let registry: Promise<RegistryClient> | undefined;
  return {
    content: session.content,
    registry: () => (registry ??= registryClient(session, options.insecureRegistries ?? [])),
  };
}

/** A registry client (loaded at first use) with the session's registry settings (kiln.toml) and these plain-HTTP hosts. */
function registryClient(session: Session, insecureHosts: readonly string[]): Promise<RegistryClient> {
  return import('../content/registry/client.js').then(
    ({ RegistryClient }) => new RegistryClient({ insecureHosts, hosts: session.config.registry, logger: session.logger }),
  );
}

/** Refuses host networking and insecure mode unless the caller allowed them. */
function checkEntitlements(op: Op, exec: ExecOp, allow: readonly Entitlement[]): void {
  const need: [boolean, Entitlement, string][] = [
    [exec.network === 'host', 'network.host', 'network'],
    [exec.security === 'insecure', 'security.insecure', 'security'],
  ];
  for (const [needed, entitlement, field] of need) {
    if (needed && !allow.includes(entitlement)) {
      throw new MissingGrantError(ERROR_CODES.ENTITLEMENT, `op "${op.name}" needs ${entitlement}, which was not allowed`, {
        op: op.name,
        field: `ops.${op.name}.exec.${field}`,
        grant: { kind: 'entitlement', entitlement },
      });
    }
  }
}

/** Names the op on a worker-selection error. */
async function withOpName<T>(op: Op, select: () => Promise<T>): Promise<T> {
  try {
    return await select();
  } catch (err) {
    if (err instanceof KilnError && err.op === undefined) {
      throw new OpError(err.code, `op "${op.name}": ${err.message}`, { op: op.name, field: `ops.${op.name}.constraints`, cause: err });
    }
    throw err;
  }
}

function isLoaded(d: Definition | RawDefinition): d is Definition {
  return (d as Definition).ops instanceof Map;
}

/** How `kiln debug` opens a shell on `op`'s result (see DebugShellSpec). */
function debugShellSpec(op: Op): DebugShellSpec {
  if (op.body.kind !== 'exec') return { env: [], cwd: '/', user: 'root', network: 'sandbox', rootOutput: 0 };
  const { meta, mounts, network } = op.body.exec;
  const root = mounts.find((m) => m.dest === '/' && m.type === 'bind');
  return { env: [...meta.env], cwd: meta.cwd, user: meta.user, network, rootOutput: root?.type === 'bind' && root.output >= 0 ? root.output : 0 };
}
