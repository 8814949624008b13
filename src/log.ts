/**
 * Diagnostics logging (pino). Logs go to stderr or a file, never into the
 * progress stream; the level comes from `--log-level` or `KILN_LOG`.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface LoggerOptions {
  /** Defaults to `KILN_LOG`, else `warn`. */
  readonly level?: LogLevel;
  /** Append to this file instead of writing to stderr. */
  readonly file?: string;
}

/** True when `s` names a pino level kiln accepts. */
export function isLogLevel(s: string): s is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(s);
}

/** Creates the process logger. Synchronous destination so nothing is lost on exit. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const envLevel = process.env['KILN_LOG'];
  const level = options.level ?? (envLevel !== undefined && isLogLevel(envLevel) ? envLevel : 'warn');
  const destination = pino.destination({ dest: options.file ?? 2, sync: true, append: true, mkdir: true });
  return pino({ level, base: { pid: process.pid } }, destination);
}

/** A logger that discards everything (library use without configuration). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
