/**
 * A process's stdout and stderr, streamed into progress as they come. What
 * one op may log is capped (as BuildKit caps step logs) so a chatty process
 * cannot flood the progress stream, and the last lines are kept for the
 * error message when the process fails.
 */
import { Writable } from 'node:stream';
import type { ProgressSink } from '../../progress/types.js';

/** Bytes of output one op may send to progress before it is clipped. */
export const LOG_LIMIT_BYTES = 4 * 1024 * 1024;
/** Lines of output quoted in a failure message. */
const TAIL_LINES = 10;
/** Longest line kept for that quote. */
const TAIL_LINE_MAX = 500;

/** The two streams of one process and what they keep for errors. */
export interface ProcessOutput {
  readonly stdout: Writable;
  readonly stderr: Writable;
  /** The last lines written to either stream, oldest first. */
  tail(): string[];
}

/** Streams that turn writes into `log` events for `vertex`. */
export function processOutput(vertex: string, progress: ProgressSink): ProcessOutput {
  let sent = 0;
  let clipped = false;
  const lines: string[] = [];
  const partial = ['', ''];

  const remember = (index: 0 | 1, text: string): void => {
    const parts = `${partial[index] ?? ''}${text}`.split('\n');
    partial[index] = (parts.pop() ?? '').slice(-TAIL_LINE_MAX);
    for (const line of parts) lines.push(line.slice(0, TAIL_LINE_MAX));
    if (lines.length > TAIL_LINES) lines.splice(0, lines.length - TAIL_LINES);
  };

  const stream = (fd: 1 | 2): Writable =>
    new Writable({
      decodeStrings: true,
      write(chunk: Buffer, _encoding, done) {
        const text = chunk.toString('utf8');
        remember(fd === 1 ? 0 : 1, text);
        if (sent < LOG_LIMIT_BYTES) {
          const room = LOG_LIMIT_BYTES - sent;
          const data = text.length > room ? text.slice(0, room) : text;
          sent += data.length;
          progress.emit({ type: 'log', vertex, stream: fd, data, timestamp: new Date().toISOString() });
        } else if (!clipped) {
          clipped = true;
          const data = `\n[output clipped: this step wrote more than ${LOG_LIMIT_BYTES / 1024 / 1024} MiB]\n`;
          progress.emit({ type: 'log', vertex, stream: 2, data, timestamp: new Date().toISOString() });
        }
        done();
      },
    });

  return {
    stdout: stream(1),
    stderr: stream(2),
    tail: () => [...lines, ...partial.filter((p) => p !== '')].slice(-TAIL_LINES),
  };
}
