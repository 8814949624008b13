/**
 * The `plain` progress mode: line-oriented text in the style of
 * `buildctl --progress=plain`, readable in CI logs where nothing is redrawn.
 * Each vertex gets a number when first seen and every line starts with it:
 *
 *   #1 [compile]
 *   #1 rerun: meta.args[2] changed "make" → "make -j4"
 *   #1 0.512 gcc -c main.c
 *   #1 DONE 0.7s
 *
 * Outputs are numbered after the ops, with their counters:
 *
 *   #4 [export oci out.tar]
 *   #4 layers compressed 1 done
 *   #4 bytes written 10240 done
 *   #4 DONE 0.2s
 */
import { formatBytes, formatSeconds as seconds } from './format.js';
import { formatReason } from './reason.js';
import { createSummaryCollector, summaryLines } from './summary.js';
import { BYTE_COUNTERS, type LogEvent, type ProgressEvent, type ProgressSink, type StatusEvent, type VertexEvent } from './types.js';

/** Options of the plain renderer. */
export interface PlainRendererOptions {
  /** The clock, in milliseconds (tests inject one). Default: `Date.now`. */
  readonly now?: () => number;
  /**
   * Print the build's summary when closed: steps run and cached, the time,
   * and each output with its image digest (the CLI does; default false).
   */
  readonly summary?: boolean;
}

/** Status counters print at most this often per counter, so hashing 10 000 files is not 10 000 lines. */
const STATUS_INTERVAL_MS = 250;

interface VertexState {
  readonly number: number;
  /** When the vertex started (or was first seen): log lines show the time since. */
  since: number;
  announced: boolean;
  /** Whether its rerun reason was printed (once, under its name). */
  explained: boolean;
  done: boolean;
  /** The unterminated end of each output stream, printed once its line ends. */
  readonly partial: Map<number, string>;
  readonly statuses: Map<string, { printedAt: number; pending: StatusEvent | undefined }>;
}

/**
 * Renders progress as plain text lines on `out`. Tolerates events in any
 * order (a log before its vertex, a completion without a start) and never
 * throws. `close()` prints what is still buffered and waits for `out` to flush.
 */
export function createPlainRenderer(
  out: NodeJS.WritableStream,
  options: PlainRendererOptions = {},
): ProgressSink & { close(): Promise<void> } {
  const now = options.now ?? Date.now;
  const vertices = new Map<string, VertexState>();
  const summary = options.summary === true ? createSummaryCollector() : undefined;
  const started = now();
  let closed = false;

  const vertexState = (digest: string): VertexState => {
    let state = vertices.get(digest);
    if (state === undefined) {
      state = { number: vertices.size + 1, since: now(), announced: false, explained: false, done: false, partial: new Map(), statuses: new Map() };
      vertices.set(digest, state);
    }
    return state;
  };

  const write = (state: VertexState, lines: readonly string[]): void => {
    if (lines.length > 0) out.write(lines.map((line) => `#${state.number} ${line}\n`).join(''));
  };

  const logLine = (state: VertexState, line: string): string =>
    `${seconds(now() - state.since, 3)} ${line.endsWith('\r') ? line.slice(0, -1) : line}`;

  const statusLine = (status: StatusEvent): string => {
    const fmt = (n: number): string => (status.unit === 'bytes' ? formatBytes(n) : String(n));
    const total = status.total === undefined ? '' : `/${fmt(status.total)}`;
    return `${status.id} ${fmt(status.current)}${total}${status.completed === undefined ? '' : ' done'}`;
  };

  /** Prints buffered partial lines and throttled counters (their final values). */
  const flush = (state: VertexState): void => {
    const lines: string[] = [];
    for (const [stream, text] of state.partial) {
      if (text !== '') lines.push(logLine(state, text));
      state.partial.delete(stream);
    }
    for (const status of state.statuses.values()) {
      if (status.pending !== undefined) lines.push(statusLine(status.pending));
      status.pending = undefined;
    }
    write(state, lines);
  };

  const onVertex = (event: VertexEvent): void => {
    const state = vertexState(String(event.digest));
    if ((event.started !== undefined || event.completed !== undefined) && !state.announced) {
      state.announced = true;
      state.since = now();
      write(state, [`[${String(event.name)}]`]);
    }
    if (event.reason !== undefined && !event.cached && !state.explained && !state.done) {
      state.explained = true;
      write(state, [`rerun: ${formatReason(event.reason)}`]);
    }
    if (event.completed === undefined || state.done) return;
    state.done = true;
    flush(state);
    if (event.error !== undefined) write(state, [`ERROR: ${String(event.error)}`]);
    else if (event.cached) write(state, ['CACHED']);
    else write(state, [`DONE ${seconds(now() - state.since, 1)}s`]);
  };

  const onLog = (event: LogEvent): void => {
    const state = vertexState(String(event.vertex));
    const lines = `${state.partial.get(event.stream) ?? ''}${String(event.data)}`.split('\n');
    state.partial.set(event.stream, lines.pop() ?? '');
    write(state, lines.map((line) => logLine(state, line)));
  };

  const onStatus = (event: StatusEvent): void => {
    const state = vertexState(String(event.vertex));
    let status = state.statuses.get(event.id);
    if (status === undefined) {
      status = { printedAt: -Infinity, pending: undefined };
      state.statuses.set(event.id, status);
    }
    const at = now();
    if (event.completed !== undefined || at - status.printedAt >= STATUS_INTERVAL_MS) {
      status.printedAt = at;
      status.pending = undefined;
      write(state, [statusLine(event)]);
    } else {
      status.pending = event;
    }
  };

  return {
    emit(event: ProgressEvent) {
      if (closed || typeof event !== 'object' || event === null) return;
      summary?.emit(event);
      switch (event.type) {
        case 'vertex':
          return onVertex(event);
        case 'log':
          return onLog(event);
        case 'status':
          return onStatus(event);
        // An output is rendered as a step of its own, after the ops (a key no digest can take).
        case 'export': {
          const { output, name, started, completed, error } = event;
          return onVertex({ type: 'vertex', digest: `export:${output}`, name: `export ${name}`, inputs: [], cached: false, started, completed, error } as VertexEvent);
        }
        case 'export-status': {
          const { output, id, current, total, completed } = event;
          const unit = BYTE_COUNTERS.has(id) ? 'bytes' : undefined;
          return onStatus({ type: 'status', vertex: `export:${output}`, id, current, total, unit, completed } as StatusEvent);
        }
        case 'warning':
          out.write(`WARNING: ${String(event.message)}\n`);
          return;
        default:
          // A new event type fails to compile here; at run time an unknown one is skipped.
          event satisfies never;
      }
    },
    close() {
      if (!closed) {
        closed = true;
        for (const state of vertices.values()) flush(state);
        if (summary !== undefined) out.write(summaryLines(summary.summary(), now() - started).map((l) => `${l}\n`).join(''));
      }
      // An empty write's callback fires once everything written before it is flushed.
      return new Promise((resolve) => out.write('', () => resolve()));
    },
  };
}
