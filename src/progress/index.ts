/**
 * Progress renderers by mode, as chosen with `--progress`.
 */
import { concreteMode, lineRenderer, type ProgressMode, type ProgressRenderer, type RendererOptions } from './select.js';
import { createTtyRenderer, type TerminalStream } from './tty.js';

export { createPlainRenderer } from './plain.js';
export type { PlainRendererOptions } from './plain.js';
export { createRawJsonRenderer } from './rawjson.js';
export { createTtyRenderer, wantsColor, type TerminalStream, type TtyRendererOptions } from './tty.js';
export { DEFAULT_TTY_LOG_LINES } from './tty-view.js';
export { createSummaryCollector, summaryLines, type BuildSummary, type OutputSummary, type SummaryCollector } from './summary.js';
export { teeProgress } from './tee.js';
export { formatReason } from './reason.js';
export { createRerunCollector, type RerunCollector } from './rerun-report.js';
export { pausable, type PausableRenderer } from './pause.js';

export { openRenderer, PROGRESS_MODES, type ProgressMode, type ProgressRenderer, type RendererOptions } from './select.js';

/**
 * The renderer for `mode`, writing to `out`. `auto` is the live `tty` view
 * when `out` is a terminal and `plain` otherwise; plain and tty end with the
 * build's summary (steps run and cached, outputs and their image digests).
 */
export function createRenderer(mode: ProgressMode, out: TerminalStream, options: RendererOptions = {}): ProgressRenderer {
  const concrete = concreteMode(mode, out);
  return concrete === 'tty' ? createTtyRenderer(out, options) : lineRenderer(concrete, out);
}
