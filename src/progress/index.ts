/**
 * Progress renderers by mode, as chosen with `--progress`.
 */
import { assertNever } from '../errors.js';
import { createPlainRenderer } from './plain.js';
import { createRawJsonRenderer } from './rawjson.js';
import type { ProgressSink } from './types.js';

export { createPlainRenderer } from './plain.js';
export type { PlainRendererOptions } from './plain.js';
export { createRawJsonRenderer } from './rawjson.js';
export { teeProgress } from './tee.js';

/** The `--progress` modes. */
export type ProgressMode = 'auto' | 'plain' | 'rawjson';

/** A sink that writes to a stream; `close()` prints what it buffered and waits for the stream to flush. */
export type ProgressRenderer = ProgressSink & { close(): Promise<void> };

/** The renderer for `mode`, writing to `out`. */
export function createRenderer(mode: ProgressMode, out: NodeJS.WritableStream): ProgressRenderer {
  switch (mode) {
    // `auto` is plain until a tty renderer (redrawn in place on terminals) exists.
    case 'auto':
    case 'plain':
      return createPlainRenderer(out);
    case 'rawjson':
      return createRawJsonRenderer(out);
    default:
      return assertNever(mode, 'progress mode');
  }
}
