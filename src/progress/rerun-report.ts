/**
 * The report of `kiln build --explain`: every step that ran rather than
 * came from the cache, with why, collected from the progress stream.
 */
import { formatReason } from './reason.js';
import type { ProgressEvent, ProgressSink, RerunReason } from './types.js';

/** A sink that collects the rerun reasons of a build, in the order the steps first gave one. */
export interface RerunCollector extends ProgressSink {
  /** The report's lines (no newline). */
  lines(): string[];
}

/** Collects reasons; a step that in the end came from the cache is left out. */
export function createRerunCollector(): RerunCollector {
  const steps = new Map<string, { name: string; reason: RerunReason | undefined; cached: boolean }>();
  return {
    emit(event: ProgressEvent) {
      if (typeof event !== 'object' || event === null || event.type !== 'vertex') return;
      let step = steps.get(event.digest);
      if (step === undefined) {
        step = { name: event.name, reason: undefined, cached: false };
        steps.set(event.digest, step);
      }
      if (event.reason !== undefined) step.reason = event.reason;
      if (event.completed !== undefined && event.cached) step.cached = true;
    },
    lines() {
      const reran = [...steps.values()].filter((s) => s.reason !== undefined && !s.cached);
      if (reran.length === 0) return ['Why steps reran: nothing reran; every step came from the cache.'];
      return [`Why steps reran (${reran.length}):`, ...reran.map((s) => `  [${s.name}] ${formatReason(s.reason as RerunReason)}`)];
    },
  };
}
