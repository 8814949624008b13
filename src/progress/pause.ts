/**
 * Progress that steps aside while something else has the terminal (the
 * interactive shell of `kiln build -i`): while paused, nothing is written;
 * events are kept and written, in order, on resume.
 */
import type { ProgressEvent, ProgressSink } from './types.js';

/** A renderer that can be paused. */
export interface PausableRenderer extends ProgressSink {
  /** Draws the end and waits for the stream to flush. */
  close(): Promise<void>;
  /** Stops writing (a live view is cleared) and resolves once what was written is flushed. */
  pause(): Promise<void>;
  /** Writes again, first what came while paused. */
  resume(): void;
}

/**
 * `renderer` (which writes as events come) held while paused: the events
 * that come meanwhile are kept and given to it on resume, or before it
 * closes. `flush` resolves once what it wrote is out.
 */
export function pausable(renderer: ProgressSink & { close(): Promise<void> }, flush: () => Promise<void>): PausableRenderer {
  let held: ProgressEvent[] | undefined;
  const release = (): void => {
    const events = held ?? [];
    held = undefined;
    for (const event of events) renderer.emit(event);
  };
  return {
    emit(event) {
      if (held === undefined) renderer.emit(event);
      else held.push(event);
    },
    pause() {
      held ??= [];
      return flush();
    },
    resume: release,
    close() {
      release();
      return renderer.close();
    },
  };
}
