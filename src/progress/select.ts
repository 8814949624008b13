/**
 * The renderer for a `--progress` mode, as the CLI opens it: the live tty
 * view (log-update, chalk, cli-truncate and their copies of ansi-styles) is
 * loaded only when it is the one chosen, so a `plain` or `rawjson` build
 * never evaluates those modules at start.
 */
import { pausable, type PausableRenderer } from './pause.js';
import { createPlainRenderer } from './plain.js';
import { createRawJsonRenderer } from './rawjson.js';

/** The `--progress` modes. */
export const PROGRESS_MODES = ['auto', 'plain', 'tty', 'rawjson'] as const;
export type ProgressMode = (typeof PROGRESS_MODES)[number];

/**
 * A sink that writes to a stream; `close()` prints what it buffered and
 * waits for the stream to flush; `pause()` stops its writing (while a shell
 * has the terminal) until `resume()`.
 */
export type ProgressRenderer = PausableRenderer;

/** Options of a renderer. */
export interface RendererOptions {
  /** tty mode: lines of output under each running step (default 6). */
  readonly logLines?: number;
}

/** A stream a renderer writes to; a terminal's has `isTTY` (see tty.ts's TerminalStream). */
export type RendererStream = NodeJS.WritableStream & { readonly isTTY?: boolean };

/** The mode `auto` stands for on `out`: `tty` on a terminal, else `plain`. */
export function concreteMode(mode: ProgressMode, out: RendererStream): Exclude<ProgressMode, 'auto'> {
  if (mode !== 'auto') return mode;
  return out.isTTY === true ? 'tty' : 'plain';
}

/** The renderer for `mode` on `out` (see createRenderer in ./index.ts), loading the tty view only for `tty`. */
export async function openRenderer(mode: ProgressMode, out: RendererStream, options: RendererOptions = {}): Promise<ProgressRenderer> {
  const concrete = concreteMode(mode, out);
  if (concrete === 'tty') return (await import('./tty.js')).createTtyRenderer(out, options);
  return lineRenderer(concrete, out);
}

/** The plain or rawjson renderer on `out`, pausable. */
export function lineRenderer(mode: 'plain' | 'rawjson', out: RendererStream): ProgressRenderer {
  return pausable(mode === 'plain' ? createPlainRenderer(out, { summary: true }) : createRawJsonRenderer(out), () => flushed(out));
}

/** Resolves once everything written to `out` so far is flushed (an empty write's callback). */
function flushed(out: NodeJS.WritableStream): Promise<void> {
  return new Promise((resolve) => out.write('', () => resolve()));
}
