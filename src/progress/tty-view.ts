/**
 * The state and the drawing of the `tty` progress mode, without a terminal:
 * events go in, and out come the lines of finished steps (printed once,
 * they stay in the scrollback) and the frame of what is running now (redrawn
 * in place by tty.ts). Pure apart from the clock it is given, so it is
 * tested with a fake clock and any terminal size.
 *
 * A running step shows its elapsed time, its counters (bytes as sizes) and
 * the last lines of its output; only those few lines are kept here. The
 * whole output stays in the progress stream, for any other sink teed to it.
 */
import { Chalk } from 'chalk';
import cliTruncate from 'cli-truncate';
import stringWidth from 'string-width';
import stripAnsi from 'strip-ansi';
import { formatBytes, formatSeconds } from './format.js';
import { formatReason } from './reason.js';
import { BYTE_COUNTERS, type ProgressEvent } from './types.js';

/** Options of {@link createTtyView}. */
export interface TtyViewOptions {
  /** The clock, in milliseconds. */
  readonly now: () => number;
  /** Lines of output shown under each running step (default 6). */
  readonly logLines?: number;
  /** Whether to colour (ANSI SGR) the lines. */
  readonly color: boolean;
}

/** A terminal's size, as the frame is fitted to it. */
export interface TerminalSize {
  readonly columns: number;
  readonly rows: number;
}

/** The default number of output lines under a running step (`KILN_TTY_LOG_LINES` changes it). */
export const DEFAULT_TTY_LOG_LINES = 6;

interface Counter {
  readonly id: string;
  current: number;
  total: number | undefined;
  bytes: boolean;
  done: boolean;
}

interface Step {
  readonly key: string;
  name: string;
  /** When it was first seen started, on the view's clock; undefined until then. */
  since: number | undefined;
  ended: number | undefined;
  cached: boolean;
  error: string | undefined;
  /** Why it reruns (the text), shown under it; never for a cached step. */
  reason: string | undefined;
  /** Last complete output lines (at most logLines), and the unterminated end of each stream. */
  readonly logs: string[];
  readonly partial: Map<number, string>;
  readonly counters: Map<string, Counter>;
  /** Whether its finished line was handed out. */
  reported: boolean;
}

/** The view of one build. */
export interface TtyView {
  emit(event: ProgressEvent): void;
  /** Lines for the steps that finished since the last call, in the order they finished; each is handed out once. */
  takeFinished(size: TerminalSize): string[];
  /** The lines of what runs now: a headline, each running step with its counters and last output lines. */
  frame(size: TerminalSize): string[];
  /** Whether anything is running (the frame's times move). */
  busy(): boolean;
}

/** Creates the view; events may come in any order (a log before its step, a completion without a start). */
export function createTtyView(options: TtyViewOptions): TtyView {
  const { now, color } = options;
  const logLines = Math.max(0, options.logLines ?? DEFAULT_TTY_LOG_LINES);
  const paint = new Chalk({ level: color ? 1 : 0 });
  const started = now();
  const steps = new Map<string, Step>();
  const finished: Step[] = [];
  /** Warnings not yet printed: they go out with the next finished lines. */
  const warnings: string[] = [];

  const step = (key: string, name?: string): Step => {
    let s = steps.get(key);
    if (s === undefined) {
      s = { key, name: name ?? key, since: undefined, ended: undefined, cached: false, error: undefined, reason: undefined, logs: [], partial: new Map(), counters: new Map(), reported: false };
      steps.set(key, s);
    } else if (name !== undefined) {
      s.name = name;
    }
    return s;
  };

  const update = (s: Step, event: { started?: string | undefined; completed?: string | undefined; cached?: boolean; error?: string | undefined }): void => {
    if (s.ended !== undefined) return; // the first completion is the outcome
    if ((event.started !== undefined || event.completed !== undefined) && s.since === undefined) s.since = now();
    if (event.completed === undefined) return;
    s.ended = now();
    s.cached = event.cached === true;
    if (s.cached) s.reason = undefined;
    s.error = event.error;
    for (const text of s.partial.values()) pushLine(s, text);
    s.partial.clear();
    finished.push(s);
  };

  const pushLine = (s: Step, line: string): void => {
    const clean = cleanLine(line);
    if (clean === '' || logLines === 0) return;
    s.logs.push(clean);
    if (s.logs.length > logLines) s.logs.splice(0, s.logs.length - logLines);
  };

  const count = (s: Step, id: string, current: number, total: number | undefined, bytes: boolean, done: boolean): void => {
    const c = s.counters.get(id);
    if (c === undefined) s.counters.set(id, { id, current, total, bytes, done });
    else Object.assign(c, { current, total, bytes, done });
  };

  const countersText = (s: Step): string =>
    [...s.counters.values()]
      .map((c) => {
        const fmt = (n: number): string => (c.bytes ? formatBytes(n) : String(n));
        return `${c.id} ${fmt(c.current)}${c.total === undefined ? '' : ` / ${fmt(c.total)}`}${c.done ? ' done' : ''}`;
      })
      .join(', ');

  /** `left` then `right` at the right edge of `columns`, the left part cut with an ellipsis when both do not fit. */
  const fit = (left: string, right: string, columns: number): string => {
    const room = columns - stringWidth(right) - 1;
    if (room < 8) return cliTruncate(`${left} ${right}`, columns);
    const cut = cliTruncate(left, room);
    return `${cut}${' '.repeat(Math.max(1, columns - stringWidth(cut) - stringWidth(right)))}${right}`;
  };

  const reasonLines = (s: Step, size: TerminalSize): string[] =>
    s.reason === undefined || s.cached ? [] : [cliTruncate(paint.yellow(`   rerun: ${s.reason}`), size.columns)];

  const finishedLines = (s: Step, size: TerminalSize): string[] => {
    const took = `${formatSeconds((s.ended ?? now()) - (s.since ?? s.ended ?? now()))}s`;
    if (s.error !== undefined) {
      const head = fit(`${paint.red('=> ERROR')} [${s.name}]`, paint.red(took), size.columns);
      // The last lines of a failed step stay on screen: they say why.
      // Its output and error first, right under it: they say what went wrong; why it ran comes after.
      return [head, ...s.logs.map((l) => cliTruncate(`   | ${l}`, size.columns)), cliTruncate(`   ${paint.red(`ERROR: ${s.error}`)}`, size.columns), ...reasonLines(s, size)];
    }
    const outcome = s.cached ? paint.blue('CACHED') : paint.green(`DONE ${took}`);
    return [fit(`=> [${s.name}]`, outcome, size.columns), ...reasonLines(s, size)];
  };

  return {
    emit(event) {
      if (typeof event !== 'object' || event === null) return;
      switch (event.type) {
        case 'vertex': {
          const s = step(event.digest, event.name);
          if (event.reason !== undefined && !event.cached && s.ended === undefined) s.reason = formatReason(event.reason);
          return update(s, event);
        }
        case 'export':
          return update(step(`export:${event.output}`, `export ${event.name}`), { ...event, cached: false });
        case 'log': {
          const s = step(event.vertex);
          const lines = `${s.partial.get(event.stream) ?? ''}${event.data}`.split('\n');
          s.partial.set(event.stream, lines.pop() ?? '');
          for (const line of lines) pushLine(s, line);
          return;
        }
        case 'status':
          return count(step(event.vertex), event.id, event.current, event.total, event.unit === 'bytes', event.completed !== undefined);
        case 'export-status':
          return count(step(`export:${event.output}`), event.id, event.current, event.total, BYTE_COUNTERS.has(event.id), event.completed !== undefined);
        case 'warning':
          warnings.push(event.message);
          return;
        default:
          event satisfies never;
      }
    },

    takeFinished(size) {
      const out: string[] = warnings.splice(0).map((w) => cliTruncate(paint.yellow(`WARNING: ${w}`), size.columns));
      for (const s of finished.splice(0)) {
        if (s.reported) continue;
        s.reported = true;
        out.push(...finishedLines(s, size));
      }
      return out;
    },

    frame(size) {
      const running = [...steps.values()].filter(isRunning);
      const done = [...steps.values()].filter((s) => s.ended !== undefined).length;
      const head = `[+] Building ${formatSeconds(now() - started)}s (${done} done, ${running.length} running)`;
      const lines = [cliTruncate(paint.bold(head), size.columns)];
      // Each running step keeps its own line; the output lines under them shrink to fit the terminal's height.
      const explained = running.filter((s) => s.reason !== undefined).length;
      const room = Math.max(0, size.rows - 2 - running.length - explained);
      const perStep = running.length === 0 ? 0 : Math.min(logLines, Math.floor(room / running.length));
      for (const s of running) {
        const counters = countersText(s);
        const left = `=> [${s.name}]${counters === '' ? '' : ` ${counters}`}`;
        lines.push(fit(paint.cyan(left), `${formatSeconds(now() - (s.since ?? now()))}s`, size.columns));
        lines.push(...reasonLines(s, size));
        const partial = [...s.partial.values()].map(cleanLine).filter((l) => l !== '');
        const all = [...s.logs, ...partial];
        for (const l of perStep === 0 ? [] : all.slice(-perStep)) {
          lines.push(cliTruncate(paint.dim(`   | ${l}`), size.columns));
        }
      }
      return lines;
    },

    busy() {
      for (const s of steps.values()) if (isRunning(s)) return true;
      return false;
    },
  };
}

/**
 * Whether a step is shown running: started, not finished, and not idle. A
 * step whose counters are all done and that printed nothing is idle: a
 * local source whose files were hashed for a cache key waits there until
 * the build ends when the step above it comes from the cache (the solver
 * reports it CACHED then), and a frame that showed it running all along
 * would say what is not so.
 */
function isRunning(s: Step): boolean {
  if (s.since === undefined || s.ended !== undefined) return false;
  const counters = [...s.counters.values()];
  const idle = counters.length > 0 && counters.every((c) => c.done) && s.logs.length === 0 && s.partial.size === 0;
  return !idle;
}

/**
 * A line of a process's output as one terminal line: what a carriage return
 * left visible (progress bars redraw with `\r`), without escape sequences or
 * other control characters, tabs as spaces.
 */
export function cleanLine(line: string): string {
  const visible = line.replace(/\r+$/, '').split('\r').at(-1) ?? '';
   
  return stripAnsi(visible).replaceAll('\t', '    ').replace(/[\x00-\x1f\x7f]/g, '');
}
