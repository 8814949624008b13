/**
 * The `tty` progress mode: a live view on a terminal, redrawn in place. The
 * steps running now are drawn at the bottom with their elapsed time, their
 * counters and the last lines of their output; a step that finishes leaves
 * the live part as one line (`CACHED`, `DONE 1.2s`, or `ERROR` with its last
 * lines) printed above it, where the terminal's scrollback keeps it. When
 * the build ends the live part is cleared and the summary printed.
 *
 *   => [fetch base]                                   CACHED
 *   => [compile]                                    DONE 4.1s
 *   [+] Building 6.3s (2 done, 1 running)
 *   => [test]                                            2.2s
 *      | ok 12 - parses empty input
 *      | ok 13 - parses a comment
 *
 * The view is drawn at most every {@link REDRAW_INTERVAL_MS} (so a chatty
 * step costs no more than ten frames a second), and again when the terminal
 * is resized. log-update moves the cursor and erases the old frame; this file
 * writes no escape sequence of its own.
 */
import { createLogUpdate } from 'log-update';
import { Chalk } from 'chalk';
import { createSummaryCollector, summaryLines } from './summary.js';
import { createTtyView, type TerminalSize } from './tty-view.js';
import type { PausableRenderer } from './pause.js';
import type { ProgressEvent } from './types.js';

/** The least time between two frames. */
export const REDRAW_INTERVAL_MS = 100;

/** Options of {@link createTtyRenderer}. */
export interface TtyRendererOptions {
  /** Lines of output under each running step (default 6; the CLI reads `KILN_TTY_LOG_LINES`). */
  readonly logLines?: number;
  /** Colour the view (default: the stream says it has colours and NO_COLOR is not set). */
  readonly color?: boolean;
  /** The clock, in milliseconds (tests inject one). Default: `Date.now`. */
  readonly now?: () => number;
}

/** A terminal stream as Node gives one (`process.stderr` on a tty): its size, and `resize` events. */
export type TerminalStream = NodeJS.WritableStream & {
  readonly columns?: number;
  readonly rows?: number;
  readonly isTTY?: boolean;
  hasColors?(): boolean;
};

/** Whether to colour a stream: the stream can, and NO_COLOR (no-color.org) is unset or empty. */
export function wantsColor(out: TerminalStream, env: NodeJS.ProcessEnv = process.env): boolean {
  const noColor = env['NO_COLOR'];
  if (noColor !== undefined && noColor !== '') return false;
  return typeof out.hasColors === 'function' && out.hasColors();
}

/**
 * Renders progress on a terminal `out`; `close()` draws the end (finished
 * steps, the summary) and waits for `out` to flush. `pause()` clears the
 * live part and draws nothing until `resume()` (the view keeps following
 * the events meanwhile).
 */
export function createTtyRenderer(out: TerminalStream, options: TtyRendererOptions = {}): PausableRenderer {
  const now = options.now ?? Date.now;
  const color = options.color ?? wantsColor(out);
  const view = createTtyView({ now, color, ...(options.logLines === undefined ? {} : { logLines: options.logLines }) });
  const summary = createSummaryCollector();
  const started = now();
  const log = createLogUpdate(out);
  // One column short of the width: a line that fills the last column makes some terminals wrap early.
  const size = (): TerminalSize => ({ columns: Math.max(20, (out.columns ?? 80) - 1), rows: Math.max(4, out.rows ?? 24) });
  let dirty = true;
  let closed = false;
  let paused = false;

  const draw = (): void => {
    const finished = view.takeFinished(size());
    if (finished.length > 0) log.persist(finished.join('\n'));
    log(view.frame(size()).join('\n'));
    dirty = false;
  };
  // One timer for the build: it draws when something changed, or to move the clocks of running steps.
  const timer = setInterval(() => {
    if (!paused && (dirty || view.busy())) draw();
  }, REDRAW_INTERVAL_MS);
  timer.unref();
  const onResize = (): void => {
    dirty = true;
  };
  out.on('resize', onResize);

  return {
    emit(event: ProgressEvent) {
      if (closed) return;
      view.emit(event);
      summary.emit(event);
      dirty = true;
    },
    pause() {
      if (!paused && !closed) {
        paused = true;
        // The finished steps stay above; the live part goes, so the terminal is left as a person expects.
        const finished = view.takeFinished(size());
        if (finished.length > 0) log.persist(finished.join('\n'));
        log.clear();
      }
      return new Promise((resolve) => out.write('', () => resolve()));
    },
    resume() {
      paused = false;
      dirty = true;
    },
    close() {
      paused = false;
      if (!closed) {
        closed = true;
        clearInterval(timer);
        out.off('resize', onResize);
        const finished = view.takeFinished(size());
        if (finished.length > 0) log.persist(finished.join('\n'));
        else log.clear();
        log.done();
        // Written as it is, not through log-update, which would break a long line (a digest) where a copy would keep the break.
        const paint = new Chalk({ level: color ? 1 : 0 });
        const [headline, ...outputs] = summaryLines(summary.summary(), now() - started);
        if (headline !== undefined) out.write(`${[paint.bold(headline), ...outputs].join('\n')}\n`);
      }
      // An empty write's callback fires once everything written before it is flushed.
      return new Promise((resolve) => out.write('', () => resolve()));
    },
  };
}
