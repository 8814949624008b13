/** Fan-out of one progress stream to several sinks. */
import type { ProgressSink } from './types.js';

/** A sink that passes every event to each of `sinks`, in order (e.g. a renderer and an API listener). */
export function teeProgress(...sinks: readonly ProgressSink[]): ProgressSink {
  return {
    emit(event) {
      for (const sink of sinks) sink.emit(event);
    },
  };
}
