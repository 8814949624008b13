/**
 * What a build did, collected from its progress stream: how many steps ran,
 * came from the cache or failed, how long it took, and the outputs written
 * with their image digests. The plain and tty renderers print it when they
 * close, so a person sees the same last lines in a CI log and in a terminal.
 */
import { formatSeconds } from './format.js';
import type { ExportEvent, ProgressEvent, ProgressSink, VertexEvent } from './types.js';

/** One output of the build as it ended. */
export interface OutputSummary {
  /** What progress calls it: `oci out.tar`, `image example.com/app:v1 (push)`. */
  readonly name: string;
  /** The image manifest digest, for image outputs. */
  readonly digest?: string;
  readonly error?: string;
  /** Whether it finished (written, or failed); false while it is being written. */
  readonly finished: boolean;
}

/** The counts and outputs of a build so far. */
export interface BuildSummary {
  /** Steps that ran (not from the cache) and finished without an error. */
  readonly run: number;
  readonly cached: number;
  readonly failed: number;
  /**
   * Steps started and not finished. A failed build leaves some so (a source
   * keyed for a step that then came from the cache is only reported cached
   * when the build succeeds): the headline does not count them.
   */
  readonly running: number;
  readonly outputs: readonly OutputSummary[];
}

/** A sink that keeps a {@link BuildSummary} up to date. */
export interface SummaryCollector extends ProgressSink {
  summary(): BuildSummary;
}

/** Collects the summary of the events it is given; tolerant of any order and of repeats, like the renderers. */
export function createSummaryCollector(): SummaryCollector {
  const vertices = new Map<string, Pick<VertexEvent, 'completed' | 'cached' | 'error'>>();
  const outputs = new Map<number, ExportEvent>();
  return {
    emit(event: ProgressEvent) {
      if (typeof event !== 'object' || event === null) return;
      switch (event.type) {
        case 'vertex': {
          const known = vertices.get(event.digest);
          // A vertex's first completion is its outcome (a later "cancelled" does not undo an error).
          if (known?.completed === undefined) vertices.set(event.digest, event);
          return;
        }
        case 'export': {
          const known = outputs.get(event.output);
          if (known?.completed === undefined) outputs.set(event.output, event);
          return;
        }
        case 'status':
        case 'export-status':
        case 'log':
        case 'warning':
          return;
        default:
          event satisfies never;
      }
    },
    summary() {
      let run = 0;
      let cached = 0;
      let failed = 0;
      let running = 0;
      for (const v of vertices.values()) {
        if (v.completed === undefined) running++;
        else if (v.error !== undefined) failed++;
        else if (v.cached) cached++;
        else run++;
      }
      const list = [...outputs.entries()]
        .sort(([a], [b]) => a - b)
        .map(([, o]): OutputSummary => ({
          name: o.name,
          finished: o.completed !== undefined,
          ...(o.digest === undefined ? {} : { digest: o.digest }),
          ...(o.error === undefined ? {} : { error: o.error }),
        }));
      return { run, cached, failed, running, outputs: list };
    },
  };
}

/**
 * The summary as text lines: a headline, then one line per output (with
 * its digest, or what went wrong). `elapsedMs` is the build's wall time.
 * No lines when no step started and no output was written.
 *
 *   Built in 3.2s: 4 steps run, 2 cached
 *     oci out.tar  sha256:5c1f...
 */
export function summaryLines(summary: BuildSummary, elapsedMs: number): string[] {
  // A build refused before any step started has nothing to sum up: its error says it all.
  if (summary.run + summary.cached + summary.failed + summary.running === 0 && summary.outputs.length === 0) return [];
  const counts = [`${summary.run} ${summary.run === 1 ? 'step' : 'steps'} run`, `${summary.cached} cached`];
  if (summary.failed > 0) counts.push(`${summary.failed} failed`);
  const outputFailed = summary.outputs.some((o) => o.error !== undefined || !o.finished);
  const ok = summary.failed === 0 && summary.running === 0 && !outputFailed;
  const lines = [`${ok ? 'Built' : 'Failed'} in ${formatSeconds(elapsedMs)}s: ${counts.join(', ')}`];
  for (const o of summary.outputs) {
    const outcome = o.error !== undefined ? `ERROR: ${o.error}` : !o.finished ? 'not finished' : (o.digest ?? 'written');
    lines.push(`  ${o.name}  ${outcome}`);
  }
  return lines;
}
