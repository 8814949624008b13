/**
 * Progress renderers by mode, as chosen with `--progress`.
 */
import { assertNever } from '../errors.js';
import { pausable, type PausableRenderer } from './pause.js';
import { createPlainRenderer } from './plain.js';
import { createRawJsonRenderer } from './rawjson.js';
import { createTtyRenderer, type TerminalStream } from './tty.js';

export { createPlainRenderer } from './plain.js';
export type { PlainRendererOptions } from './plain.js';
export { createRawJsonRenderer } from './rawjson.js';
export { createTtyRenderer, wantsColor, type TerminalStream, type TtyRendererOptions } from './tty.js';
export { DEFAULT_TTY_LOG_LINES } from './tty-view.js';
export { createSummaryCollector, summaryLines, type BuildSummary, type OutputSummary, type SummaryCollector } from './summary.js';
export { teeProgress } from './tee.js';
export { pausable, type PausableRenderer } from './pause.js';

/** The `--progress` modes. */
export const PROGRESS_MODES = ['auto', 'plain', 'tty', 'rawjson'] as const;
export type ProgressMode = (typeof PROGRESS_MODES)[number];

/**
 * A sink that writes to a stream; `close()` prints what it buffered and
 * waits for the stream to flush; `pause()` stops its writing (while a shell
 * has the terminal) until `resume()`.
 */
export type ProgressRenderer = PausableRenderer;

/** Options of {@link createRenderer}. */
export interface RendererOptions {
  /** tty mode: lines of output under each running step (default 6). */
  readonly logLines?: number;
}

/**
 * The renderer for `mode`, writing to `out`. `auto` is the live `tty` view
 * when `out` is a terminal and `plain` otherwise; plain and tty end with the
 * build's summary (steps run and cached, outputs and their image digests).
 */
export function createRenderer(mode: ProgressMode, out: TerminalStream, options: RendererOptions = {}): ProgressRenderer {
  switch (mode) {
    case 'auto':
      return createRenderer(out.isTTY === true ? 'tty' : 'plain', out, options);
    case 'tty':
      return createTtyRenderer(out, options);
    case 'plain':
      return pausable(createPlainRenderer(out, { summary: true }), () => flushed(out));
    case 'rawjson':
      return pausable(createRawJsonRenderer(out), () => flushed(out));
    default:
      return assertNever(mode, 'progress mode');
  }
}

/** Resolves once everything written to `out` so far is flushed (an empty write's callback). */
function flushed(out: NodeJS.WritableStream): Promise<void> {
  return new Promise((resolve) => out.write('', () => resolve()));
}
