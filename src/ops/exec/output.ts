/**
 * A process's stdout and stderr, streamed into progress as they come. What
 * one op may log is capped (as BuildKit caps step logs) so a chatty process
 * cannot flood the progress stream, and the last lines are kept for the
 * error message when the process fails. Build secrets are masked before
 * the output goes anywhere. The whole output, unclipped, can also go to a
 * stream of its own (the build history's log of the step), whose
 * backpressure reaches the process: its pipe is not read while that stream
 * is full.
 */
import { Writable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import type { ProgressSink } from '../../progress/types.js';

/** Bytes of output one op may send to progress before it is clipped. */
export const LOG_LIMIT_BYTES = 4 * 1024 * 1024;
/** Lines of output quoted in a failure message. */
const TAIL_LINES = 10;
/** Longest line kept for that quote. */
const TAIL_LINE_MAX = 500;
/** What a secret in the output is replaced with. */
export const SECRET_MASK = '****';
/** Shorter secrets (and lines of secrets) are not masked: they would blot out ordinary output. */
const MASK_MIN_BYTES = 4;

/** The two streams of one process and what they keep for errors. */
export interface ProcessOutput {
  readonly stdout: Writable;
  readonly stderr: Writable;
  /** Sends what is still held back (the possible start of a secret) and ends the full log; call once the process has exited. */
  flush(): void;
  /** The last lines written to either stream, oldest first. */
  tail(): string[];
}

/**
 * Streams that turn writes into `log` events for `vertex`, with every value
 * of `secrets`, and each line of a multi-line one, replaced by `****`.
 * `full`, when given, gets all of the masked output, past the clip too.
 */
export function processOutput(vertex: string, progress: ProgressSink, secrets: readonly Uint8Array[] = [], full?: Writable): ProcessOutput {
  const patterns = maskPatterns(secrets);
  // A secret split across two writes is only seen whole once the second
  // comes, so the last bytes that could begin one are held back until then.
  const holdBack = Math.max(0, ...patterns.map((p) => p.length - 1));
  let sent = 0;
  let clipped = false;
  const lines: string[] = [];
  const partial = ['', ''];
  // Per stream: the bytes held back, and a decoder that keeps a character split across writes whole.
  const held: Record<1 | 2, { bytes: Buffer; readonly decoder: StringDecoder }> = {
    1: { bytes: Buffer.alloc(0), decoder: new StringDecoder('utf8') },
    2: { bytes: Buffer.alloc(0), decoder: new StringDecoder('utf8') },
  };

  const remember = (index: 0 | 1, text: string): void => {
    const parts = `${partial[index] ?? ''}${text}`.split('\n');
    partial[index] = (parts.pop() ?? '').slice(-TAIL_LINE_MAX);
    for (const line of parts) lines.push(line.slice(0, TAIL_LINE_MAX));
    if (lines.length > TAIL_LINES) lines.splice(0, lines.length - TAIL_LINES);
  };

  const send = (fd: 1 | 2, text: string): void => {
    if (text === '') return;
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
  };

  const stream = (fd: 1 | 2): Writable =>
    new Writable({
      decodeStrings: true,
      write(chunk: Buffer, _encoding, done) {
        const h = held[fd];
        const masked = mask(Buffer.concat([h.bytes, chunk]), patterns);
        const ready = Math.max(0, masked.length - holdBack);
        h.bytes = masked.subarray(ready);
        const out = masked.subarray(0, ready);
        // Past the clip only the last lines are kept (for an error), so only they are decoded.
        if (clipped) remember(fd === 1 ? 0 : 1, lastLines(out, h));
        else send(fd, h.decoder.write(out));
        if (full === undefined || out.length === 0 || full.write(out)) done();
        else full.once('drain', () => done());
      },
    });

  return {
    stdout: stream(1),
    stderr: stream(2),
    flush: () => {
      for (const fd of [1, 2] as const) {
        const h = held[fd];
        const out = mask(h.bytes, patterns);
        send(fd, h.decoder.write(out) + h.decoder.end());
        if (out.length > 0) full?.write(out);
        h.bytes = Buffer.alloc(0);
      }
      full?.end();
    },
    tail: () => [...lines, ...partial.filter((p) => p !== '')].slice(-TAIL_LINES),
  };
}

/**
 * The text of `out` that can still matter to the last TAIL_LINES lines.
 * When `out` holds more line breaks than that, what comes before them is
 * dropped (with the decoder's state: the cut is just after a line break, so
 * at a character's start) and the line being built is ended, as all of it
 * would have been pushed out by the lines that follow anyway.
 */
function lastLines(out: Buffer, held: { readonly decoder: StringDecoder }): string {
  let cut = out.length;
  for (let breaks = 0; breaks <= TAIL_LINES; breaks++) {
    cut = cut > 0 ? out.lastIndexOf(0x0a, cut - 1) : -1;
    if (cut < 0) return held.decoder.write(out);
  }
  held.decoder.end();
  // A line break first: what was partial before ends here, and is pushed out by the lines after it.
  return `\n${held.decoder.write(out.subarray(cut + 1))}`;
}

/**
 * The byte strings to mask: each secret and each of its lines, longest first
 * so a whole value wins over its lines. A value's final line break is not
 * part of what is masked (a secret file usually ends with one), so the line
 * after a printed secret stays a line of its own.
 */
function maskPatterns(secrets: readonly Uint8Array[]): Buffer[] {
  const found = new Map<string, Buffer>();
  for (const secret of secrets) {
    const value = withoutFinalLineBreak(Buffer.from(secret));
    const parts = [value];
    for (let start = 0; start < value.length; ) {
      const end = value.indexOf(0x0a, start);
      const line = value.subarray(start, end < 0 ? value.length : end);
      parts.push(line.at(-1) === 0x0d ? line.subarray(0, -1) : line);
      start = end < 0 ? value.length : end + 1;
    }
    for (const part of parts) if (part.length >= MASK_MIN_BYTES) found.set(part.toString('hex'), part);
  }
  return [...found.values()].sort((a, b) => b.length - a.length);
}

function withoutFinalLineBreak(value: Buffer): Buffer {
  if (value.at(-1) !== 0x0a) return value;
  return value.subarray(0, value.at(-2) === 0x0d ? -2 : -1);
}

/** `data` with every occurrence of each pattern replaced by the mask. */
function mask(data: Buffer, patterns: readonly Buffer[]): Buffer {
  let out = data;
  for (const pattern of patterns) {
    let at = out.indexOf(pattern);
    if (at < 0) continue;
    const pieces: Buffer[] = [];
    let from = 0;
    for (; at >= 0; at = out.indexOf(pattern, from)) {
      pieces.push(out.subarray(from, at), MASK_BYTES);
      from = at + pattern.length;
    }
    pieces.push(out.subarray(from));
    out = Buffer.concat(pieces);
  }
  return out;
}

const MASK_BYTES = Buffer.from(SECRET_MASK);
