/**
 * Diagnostics logging (pino). Logs go to stderr or a file, never into the
 * progress stream; the level comes from `--log-level` or `KILN_LOG`.
 *
 * pino itself is loaded on the first message that passes the level, not at
 * start: most builds log nothing, and a fully cached build must not pay for
 * loading it.
 */
import { createRequire } from 'node:module';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** One logging method: structured fields and/or a message, as pino takes them. */
export type LogFn = (fieldsOrMessage: object | string, message?: string) => void;

/** What kiln's code logs through (a subset of pino's Logger). */
export interface Logger {
  readonly error: LogFn;
  readonly warn: LogFn;
  readonly info: LogFn;
  readonly debug: LogFn;
  readonly trace: LogFn;
}

export interface LoggerOptions {
  /** Defaults to `KILN_LOG`, else `warn`. */
  readonly level?: LogLevel;
  /** Append to this file instead of writing to stderr. */
  readonly file?: string;
}

const SEVERITY: Record<LogLevel, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity };

/** True when `s` names a level kiln accepts. */
export function isLogLevel(s: string): s is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(s);
}

/** Creates the process logger. Synchronous destination so nothing is lost on exit. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const envLevel = process.env['KILN_LOG'];
  const level = options.level ?? (envLevel !== undefined && isLogLevel(envLevel) ? envLevel : 'warn');
  type PinoLogger = Record<'error' | 'warn' | 'info' | 'debug' | 'trace', (fields: object | string, message?: string) => void>;
  let pinoLogger: PinoLogger | undefined;
  const real = (): PinoLogger => {
    if (pinoLogger === undefined) {
      // pino is CommonJS, so it can be required synchronously at the first message.
      const { pino } = createRequire(import.meta.url)('pino') as typeof import('pino');
      const destination = pino.destination({ dest: options.file ?? 2, sync: true, append: true, mkdir: true });
      pinoLogger = pino({ level, base: { pid: process.pid } }, destination);
    }
    return pinoLogger;
  };
  const method = (name: keyof PinoLogger): LogFn =>
    SEVERITY[name] < SEVERITY[level] ? () => {} : (fields, message) => (message === undefined ? real()[name](fields) : real()[name](fields, message));
  return { error: method('error'), warn: method('warn'), info: method('info'), debug: method('debug'), trace: method('trace') };
}

/** A logger that discards everything (library use without configuration). */
export function silentLogger(): Logger {
  return createLogger({ level: 'silent' });
}
