/**
 * Writing a solved result to its outputs: every destination is checked
 * first, the result is mounted once for all of them, each output's exporter
 * runs in turn, and the finalize steps (pushes) run once every output is
 * written. Each output reports into the solve's progress stream as a step
 * of its own (`export` events) with its counters (`export-status`).
 */
import { localCacheTarget, registryCacheTarget } from '../content/cache-target.js';
import { type ImageReference, parseReference } from '../content/reference.js';
import type { Descriptor } from '../content/types.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import type { ExportCounter } from '../progress/types.js';
import type { MountedDir } from '../snapshot/types.js';
import { checkOutputs } from './destination.js';
import { DEFAULT_EXPORTERS, type ExporterRegistry } from './registry.js';
import type { CacheExportSpec, ExportableResult, ExportContext, ExportSource, ImageFormat, OutputSpec } from './types.js';

/** Options of {@link exportResult}. */
export interface ExportResultOptions {
  readonly signal?: AbortSignal;
  /** The exporters by output type (default: the built-in ones). */
  readonly exporters?: ExporterRegistry;
}

/** What one output wrote (what `--metadata-file` records). */
export interface OutputReport {
  readonly type: OutputSpec['type'];
  /** An image output's name. */
  readonly name?: string;
  /** An image output's manifest. */
  readonly descriptor?: Descriptor;
}

/** What one cache export wrote. */
export interface CacheReport {
  readonly type: CacheExportSpec['type'];
  /** The registry reference or the directory. */
  readonly ref: string;
  readonly descriptor: Descriptor;
}

/** What exportResult wrote, in output order. */
export interface ExportReport {
  readonly outputs: readonly OutputReport[];
  readonly caches: readonly CacheReport[];
}

/** Counters print at most this often per output (the last value always does). */
const REPORT_INTERVAL_MS = 200;

/** Writes a solved result to each output in turn, then runs their finalize steps in the same order. */
export async function exportResult(result: ExportableResult, outputs: readonly OutputSpec[], options: ExportResultOptions = {}): Promise<ExportReport> {
  const reports = await exportOutputs(result, outputs, options);
  const caches: CacheReport[] = [];
  for (const spec of result.cacheExports?.specs ?? []) {
    const report = await exportOneCache(result, spec, outputs, options.signal ?? new AbortController().signal);
    if (report !== undefined) caches.push(report);
  }
  return { outputs: reports, caches };
}

async function exportOutputs(result: ExportableResult, outputs: readonly OutputSpec[], options: ExportResultOptions): Promise<OutputReport[]> {
  if (outputs.length === 0) return [];
  const env = result.environment;
  await checkOutputs(outputs, env.protect);
  const signal = options.signal ?? new AbortController().signal;
  const exporters = options.exporters ?? DEFAULT_EXPORTERS;
  let mounting: Promise<MountedDir> | undefined;
  const source: ExportSource = { ref: result.ref, image: result.image, directory: async () => (await (mounting ??= result.mount())).path };
  const pending: { index: number; output: OutputSpec; finalize: () => Promise<void>; digest: string | undefined }[] = [];
  const reports: OutputReport[] = [];
  try {
    for (const output of outputs) {
      signal.throwIfAborted();
      const index = env.nextOutput();
      env.progress.emit({ type: 'export', output: index, name: describe(output), started: new Date().toISOString() });
      const exported = await step(result, index, output, async () => {
        const exporter = await exporters.load(output.type);
        return exporter.export(source, output, context(result, index, signal));
      });
      reports.push({ type: output.type, ...('name' in output && output.name !== undefined ? { name: output.name } : {}), ...(exported.descriptor === undefined ? {} : { descriptor: exported.descriptor }) });
      if (exported.finalize === undefined) done(result, index, output, exported.digest);
      else pending.push({ index, output, finalize: exported.finalize, digest: exported.digest });
    }
  } finally {
    // The pushes below need the content store only: the result is unmounted first.
    await mounting?.then((dir) => dir.release(), () => undefined);
  }
  for (const { index, output, finalize, digest } of pending) {
    signal.throwIfAborted();
    await step(result, index, output, finalize);
    done(result, index, output, digest);
  }
  return reports;
}

/**
 * One `--export-cache`, reported as an output of its own. A failure fails
 * the build unless the spec says ignore-error=true; then it is a warning.
 */
async function exportOneCache(result: ExportableResult, spec: CacheExportSpec, outputs: readonly OutputSpec[], signal: AbortSignal): Promise<CacheReport | undefined> {
  const env = result.environment;
  const plan = result.cacheExports;
  if (plan === undefined) return undefined;
  const mode = spec.mode ?? 'min';
  const where = spec.type === 'registry' ? spec.ref : spec.dest;
  const name = `cache ${spec.type} ${where} (mode=${mode})`;
  const index = env.nextOutput();
  env.progress.emit({ type: 'export', output: index, name, started: new Date().toISOString() });
  try {
    signal.throwIfAborted();
    const { exportCache } = await import('./cache-export.js');
    let target;
    let mountFrom: ImageReference | undefined;
    if (spec.type === 'registry') {
      const ref = parseReference(spec.ref);
      target = registryCacheTarget(ref, () => env.registry(spec.insecure === true ? [ref.domain] : undefined), env.content);
      mountFrom = mountSource(ref, outputs, result);
    } else {
      target = localCacheTarget(spec.dest, spec.tag ?? 'latest', env.content);
    }
    // Cache mounts are snapshotted once per solve: a second export reuses the snapshots and their blobs.
    const mounts = spec.cacheMounts === undefined ? [] : await plan.mounts(spec.cacheMounts);
    const held = await plan.records(mode);
    let exported;
    try {
      const options = { format: cacheLayerFormat(spec, outputs), ...(mountFrom === undefined ? {} : { mountFrom }), ...(mounts.length === 0 ? {} : { mounts }) };
      exported = await exportCache(held.records, target, options, context(result, index, signal));
    } finally {
      await held.release();
    }
    env.progress.emit({ type: 'export', output: index, name, completed: new Date().toISOString(), digest: exported.descriptor.digest });
    return { type: spec.type, ref: where, descriptor: exported.descriptor };
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    if (spec.ignoreError === true && !signal.aborted) {
      env.progress.emit({ type: 'warning', message: `cache export to ${spec.type} ${where} failed (ignore-error=true): ${message}`, timestamp: new Date().toISOString() });
      env.progress.emit({ type: 'export', output: index, name, completed: new Date().toISOString() });
      return undefined;
    }
    env.progress.emit({ type: 'export', output: index, name, completed: new Date().toISOString(), error: message });
    if (err instanceof KilnError) throw err;
    throw new KilnError(ERROR_CODES.CACHE_EXPORT, `cache export to ${spec.type} ${where}: ${message}`, { cause: err });
  }
}

/**
 * How the cache's new layers are written: as the build's first image output
 * writes them (same compression and timestamp clamp), so the cache reuses
 * its blobs instead of compressing every layer again; else gzip. A
 * compression given on the cache spec wins.
 */
function cacheLayerFormat(spec: CacheExportSpec, outputs: readonly OutputSpec[]): ImageFormat {
  const image = outputs.find((o) => o.type === 'image' || o.type === 'oci' || o.type === 'docker');
  const compression = spec.compression ?? image?.compression ?? 'gzip';
  const sameAsImage = image !== undefined && compression === (image.compression ?? 'gzip');
  return {
    compression,
    ociMediaTypes: true,
    ...(sameAsImage && image.compressionLevel !== undefined ? { compressionLevel: image.compressionLevel } : {}),
    ...(sameAsImage && image.sourceDateEpoch !== undefined ? { sourceDateEpoch: image.sourceDateEpoch } : {}),
    ...(sameAsImage && image.rewriteTimestamp !== undefined ? { rewriteTimestamp: image.rewriteTimestamp } : {}),
  };
}

/**
 * A repository of the same registry that already has the result's layers:
 * an image this build pushed there, else the base image. The registry
 * mounts blobs from it instead of taking an upload.
 */
function mountSource(ref: ImageReference, outputs: readonly OutputSpec[], result: ExportableResult): ImageReference | undefined {
  for (const output of outputs) {
    if (output.type !== 'image' || output.push !== true) continue;
    const pushed = parseReference(output.name);
    if (pushed.domain === ref.domain) return pushed;
  }
  const base = result.image.base?.name;
  if (base === undefined) return undefined;
  const parsed = parseReference(base);
  return parsed.domain === ref.domain ? parsed : undefined;
}

/** Runs one step of an output; a failure is reported on the output and thrown as a KilnError naming it. */
async function step<T>(result: ExportableResult, index: number, output: OutputSpec, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    const failure = err instanceof KilnError ? err : new KilnError(ERROR_CODES.OUTPUT, `writing ${output.type} output to ${destOf(output)}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    result.environment.progress.emit({ type: 'export', output: index, name: describe(output), completed: new Date().toISOString(), error: failure.message });
    throw failure;
  }
}

function done(result: ExportableResult, index: number, output: OutputSpec, digest: string | undefined): void {
  result.environment.progress.emit({ type: 'export', output: index, name: describe(output), completed: new Date().toISOString(), ...(digest === undefined ? {} : { digest }) });
}

/** The context of output `index`: the solve's stores, and its counters reported into the solve's progress. */
function context(result: ExportableResult, index: number, signal: AbortSignal): ExportContext {
  const env = result.environment;
  const last = new Map<ExportCounter, number>();
  return {
    content: env.content,
    registry: (insecureHosts) => env.registry(insecureHosts),
    layers: env.layers,
    signal,
    report(counter, current, options = {}) {
      const now = Date.now();
      if (options.done !== true && now - (last.get(counter) ?? -Infinity) < REPORT_INTERVAL_MS) return;
      last.set(counter, now);
      env.progress.emit({
        type: 'export-status',
        output: index,
        id: counter,
        current,
        ...(options.total === undefined ? {} : { total: options.total }),
        ...(options.done === true ? { completed: new Date(now).toISOString() } : {}),
      });
    },
  };
}

/** What progress calls an output: `oci out.tar`, `image example.com/app:v1`. */
function describe(output: OutputSpec): string {
  return output.type === 'image' ? `image ${output.name}${output.push === true ? ' (push)' : ''}` : `${output.type} ${destOf(output)}`;
}

function destOf(output: OutputSpec): string {
  return output.type === 'image' ? output.name : typeof output.dest === 'string' ? output.dest : 'stream';
}
