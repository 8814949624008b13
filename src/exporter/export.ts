/**
 * Writing a solved result to its outputs: every destination is checked
 * first, the result is mounted once for all of them, each output's exporter
 * runs in turn, and the finalize steps (pushes) run once every output is
 * written. Each output reports into the solve's progress stream as a step
 * of its own (`export` events) with its counters (`export-status`).
 */
import { ERROR_CODES, KilnError } from '../errors.js';
import type { ExportCounter } from '../progress/types.js';
import type { MountedDir } from '../snapshot/types.js';
import { checkOutputs } from './destination.js';
import { DEFAULT_EXPORTERS, type ExporterRegistry } from './registry.js';
import type { ExportableResult, ExportContext, ExportSource, OutputSpec } from './types.js';

/** Options of {@link exportResult}. */
export interface ExportResultOptions {
  readonly signal?: AbortSignal;
  /** The exporters by output type (default: the built-in ones). */
  readonly exporters?: ExporterRegistry;
}

/** Counters print at most this often per output (the last value always does). */
const REPORT_INTERVAL_MS = 200;

/** Writes a solved result to each output in turn, then runs their finalize steps in the same order. */
export async function exportResult(result: ExportableResult, outputs: readonly OutputSpec[], options: ExportResultOptions = {}): Promise<void> {
  if (outputs.length === 0) return;
  const env = result.environment;
  await checkOutputs(outputs, env.protect);
  const signal = options.signal ?? new AbortController().signal;
  const exporters = options.exporters ?? DEFAULT_EXPORTERS;
  let mounting: Promise<MountedDir> | undefined;
  const source: ExportSource = { ref: result.ref, image: result.image, directory: async () => (await (mounting ??= result.mount())).path };
  const pending: { index: number; output: OutputSpec; finalize: () => Promise<void>; digest: string | undefined }[] = [];
  try {
    for (const output of outputs) {
      signal.throwIfAborted();
      const index = env.nextOutput();
      env.progress.emit({ type: 'export', output: index, name: describe(output), started: new Date().toISOString() });
      const exported = await step(result, index, output, async () => {
        const exporter = await exporters.load(output.type);
        return exporter.export(source, output, context(result, index, signal));
      });
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
