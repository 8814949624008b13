/**
 * The programmatic API: solve a definition into a result ref, and export it.
 * The CLI is a thin layer over these functions.
 */
import type { Writable } from 'node:stream';
import type { ResultRef } from '../cache/types.js';
import type { RegistryClient } from '../content/registry/client.js';
import { assertNever, ERROR_CODES, KilnError, OpError } from '../errors.js';
import { loadDefinition } from '../llb/load.js';
import type { RawDefinition } from '../llb/json-types.js';
import type { Definition, ExecOp, Op } from '../llb/types.js';
import { buildGraph, type NoCache } from '../ops/graph.js';
import { noExecutorError } from '../ops/exec-op.js';
import { missingSecretError, type Secrets, secretUses } from '../ops/exec/secrets.js';
import { checkSshMounts } from '../ops/exec/ssh.js';
import { emptyDir } from '../ops/inputs.js';
import { resultCache } from '../ops/result-cache.js';
import { checkOutputDestination, type ProtectedPaths } from '../exporter/destination.js';
import { NULL_PROGRESS, type ProgressSink } from '../progress/types.js';
import { solve as solveGraph } from '../solver/solve.js';
import type { MountedDir } from '../snapshot/types.js';
import { parseOciLayoutIdentifier, unboundLayoutError } from '../source/image/oci-layout-id.js';
import type { ImageContext } from '../source/image/types.js';
import type { Worker } from '../worker/types.js';
import type { Session } from './session.js';

export interface SolveOptions {
  /** `local://NAME` bindings: NAME → host directory. */
  readonly locals?: Readonly<Record<string, string>>;
  /** Max ops running at once (default: CPU count). */
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
  /** Rerun every op (`true`, `--no-cache`) or the named ops and their descendants (`--no-cache-filter`); see NoCache. */
  readonly noCache?: NoCache;
}

/** What a build may be allowed beyond the sandbox. */
export const ENTITLEMENTS = ['network.host', 'security.insecure'] as const;
export type Entitlement = (typeof ENTITLEMENTS)[number];

/** A solved build: the result ref, held until released. */
export interface SolveResult extends AsyncDisposable {
  /** The result; null when it is the empty filesystem. */
  readonly ref: ResultRef;
  /** Mounts the result read-only (an empty directory for scratch). */
  mount(): Promise<MountedDir>;
  release(): Promise<void>;
}

/** Solves `definition` on the session's workers. Release the result when done. */
export async function solve(session: Session, definition: Definition | RawDefinition, options: SolveOptions = {}): Promise<SolveResult> {
  const def = isLoaded(definition) ? definition : loadDefinition(definition);
  const selectFor = (constraints: readonly string[]) =>
    session.workers.select({ ...(options.worker === undefined ? {} : { id: options.worker }), constraints });
  const defaultWorker = await selectFor([]);
  const locals = new Map(Object.entries(options.locals ?? {}));
  const secrets: Secrets = new Map(Object.entries(options.secrets ?? {}));
  const ssh = new Map(Object.entries(options.ssh ?? {}));
  const images = imageContext(session, options);
  // Everything that can be refused is refused before anything runs: workers
  // for constraints, exec ops without an executor, missing secrets, unbound
  // local sources.
  const workers = new Map<string, Worker>();
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
    if (op.body.kind === 'source' && op.body.source.identifier.startsWith('oci-layout://')) {
      const site = { op: op.name, field: `ops.${op.name}.source.identifier` };
      const { name } = parseOciLayoutIdentifier(op.body.source.identifier.slice('oci-layout://'.length), site);
      if (!images.ociLayouts.has(name)) throw unboundLayoutError(op.name, name);
    }
    if (op.body.kind === 'source' && op.body.source.identifier.startsWith('local://')) {
      const name = op.body.source.identifier.slice('local://'.length);
      if (!locals.has(name)) {
        throw new OpError(ERROR_CODES.LOCAL_SOURCE, `local source "${name}" is not bound: pass --local ${name}=DIR`, {
          op: op.name,
          field: `ops.${op.name}.source.identifier`,
        });
      }
    }
  }
  const target = buildGraph(def, (op) => ({ worker: workers.get(op.name) ?? defaultWorker, locals, secrets, ssh, images, localHashes: session.localHashes, logger: session.logger }), options.noCache === undefined ? {} : { noCache: options.noCache });
  const ref =
    target === null
      ? null
      : await solveGraph(target, {
          cache: resultCache(defaultWorker.cache),
          ...(options.parallelism === undefined ? {} : { parallelism: options.parallelism }),
          ...(options.signal === undefined ? {} : { signal: options.signal }),
          progress: options.progress ?? NULL_PROGRESS,
        });
  let released = false;
  const release = async (): Promise<void> => {
    if (released) return;
    released = true;
    await ref?.release();
  };
  const result: SolveResult = {
    ref,
    mount: () => (ref === null ? emptyDir() : ref.mount()),
    release,
    [Symbol.asyncDispose]: release,
  };
  exportContexts.set(result, { definition: def, images, worker: defaultWorker, session, locals });
  return result;
}

/** What image outputs need of the solve that made a result. */
interface ExportContext {
  readonly definition: Definition;
  readonly images: ImageContext;
  readonly worker: Worker;
  readonly session: Session;
  readonly locals: ReadonlyMap<string, string>;
}

/** Kept beside each result rather than on it, so the public SolveResult stays small. */
const exportContexts = new WeakMap<SolveResult, ExportContext>();

/** The content store, registry client (loaded at first use) and OCI layouts of one solve. */
function imageContext(session: Session, options: SolveOptions): ImageContext {
  let registry: Promise<RegistryClient> | undefined;
  return {
    content: session.content,
    ociLayouts: new Map(Object.entries(options.ociLayouts ?? {})),
    resolved: new Map(),
    registry: () =>
      (registry ??= import('../content/registry/client.js').then(
        ({ RegistryClient }) => new RegistryClient({ insecureHosts: options.insecureRegistries ?? [], logger: session.logger }),
      )),
  };
}

/** How an image output writes its image. */
export interface ImageOutputOptions {
  /** Layer compression of new layers (default gzip). */
  readonly compression?: 'gzip' | 'uncompressed';
  readonly compressionLevel?: number;
  /** OCI media types (default: true for oci and image outputs, false for docker). */
  readonly ociMediaTypes?: boolean;
  /** Seconds since the epoch (SOURCE_DATE_EPOCH): created time, and the clamp for file times. */
  readonly sourceDateEpoch?: number;
  /** Clamp file times in new layers to sourceDateEpoch (default true when it is set). */
  readonly rewriteTimestamp?: boolean;
}

/** Where a result goes. */
export type OutputSpec =
  | { readonly type: 'local'; readonly dest: string }
  | { readonly type: 'tar'; readonly dest: string | Writable }
  /** An OCI image layout tarball; `name` (a reference) is recorded in index.json. */
  | ({ readonly type: 'oci'; readonly dest: string | Writable; readonly name?: string } & ImageOutputOptions)
  /** A docker-archive tarball (what `docker load` reads). */
  | ({ readonly type: 'docker'; readonly dest: string | Writable; readonly name: string } & ImageOutputOptions)
  /** kept in kiln's content store under `name`; with push, pushed to its registry (`insecure`: over plain HTTP). */
  | ({ readonly type: 'image'; readonly name: string; readonly push?: boolean; readonly insecure?: boolean } & ImageOutputOptions);

/**
 * Refuses outputs that would overwrite kiln's root or the build's local
 * sources (see exporter/destination.ts). Call it before solving to refuse
 * before anything runs; exportResult checks again in any case.
 */
export async function checkOutputs(outputs: readonly OutputSpec[], protect: ProtectedPaths): Promise<void> {
  for (const output of outputs) {
    if (output.type === 'local') await checkOutputDestination({ kind: 'directory', dest: output.dest }, protect);
    else if (output.type !== 'image' && typeof output.dest === 'string') await checkOutputDestination({ kind: 'file', dest: output.dest }, protect);
  }
}

/** Writes a solved result to each output in turn. */
export async function exportResult(result: SolveResult, outputs: readonly OutputSpec[], signal?: AbortSignal): Promise<void> {
  if (outputs.length === 0) return;
  const context = exportContexts.get(result);
  if (context !== undefined) await checkOutputs(outputs, { root: context.session.root, locals: context.locals });
  let dir: MountedDir | undefined;
  const mounted = async (): Promise<MountedDir> => (dir ??= await result.mount());
  try {
    for (const output of outputs) await exportOne(result, output, mounted, signal);
  } finally {
    await dir?.release();
  }
}

async function exportOne(result: SolveResult, output: OutputSpec, mounted: () => Promise<MountedDir>, signal: AbortSignal | undefined): Promise<void> {
  try {
    switch (output.type) {
      case 'local': {
        const { exportLocal } = await import('../exporter/local.js');
        await exportLocal((await mounted()).path, output.dest, signal === undefined ? {} : { signal });
        break;
      }
      case 'tar': {
        const { exportTar } = await import('../exporter/tar.js');
        await exportTar((await mounted()).path, output.dest, signal === undefined ? {} : { signal });
        break;
      }
      case 'oci':
      case 'docker':
      case 'image': {
        const context = exportContexts.get(result);
        if (context === undefined) throw new KilnError(ERROR_CODES.INTERNAL, 'image outputs need a result made by solve()');
        const { exportImage } = await import('../exporter/image-output.js');
        await exportImage({ ...context, ref: result.ref, output, ...(signal === undefined ? {} : { signal }) });
        break;
      }
      default:
        assertNever(output, 'output type');
    }
  } catch (err) {
    if (err instanceof KilnError) throw err;
    const dest = output.type === 'image' ? output.name : typeof output.dest === 'string' ? output.dest : 'stream';
    throw new KilnError(ERROR_CODES.OUTPUT, `writing ${output.type} output to ${dest}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

/** Refuses host networking and insecure mode unless the caller allowed them. */
function checkEntitlements(op: Op, exec: ExecOp, allow: readonly Entitlement[]): void {
  const need: [boolean, Entitlement, string][] = [
    [exec.network === 'host', 'network.host', 'network'],
    [exec.security === 'insecure', 'security.insecure', 'security'],
  ];
  for (const [needed, entitlement, field] of need) {
    if (needed && !allow.includes(entitlement)) {
      throw new OpError(ERROR_CODES.ENTITLEMENT, `op "${op.name}" needs ${entitlement}, which was not allowed: pass --allow ${entitlement} if you trust this definition`, {
        op: op.name,
        field: `ops.${op.name}.exec.${field}`,
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
