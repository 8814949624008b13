/**
 * One step's log file in the build history: a Writable for the step's
 * output, kept whole as a gzip file of one member per block (gzip and
 * every gzip reader read the members as one stream).
 *
 * The output is gathered into blocks of BLOCK_BYTES. A block is deflated
 * into a member on zlib's thread pool (the CRC too) if a deflater is free
 * (MAX_DEFLATING: the cores but one); if not, the step prints faster than
 * deflate keeps up, and the block is stored instead: a member of stored
 * deflate blocks framed here, a copy and a CRC. Waiting on the compressor
 * made a step that `cat`s 50 MB (0.1 s; `gzip -1` of it takes 0.27 s on
 * one core) 2.5x slower than with no history. Members are appended in
 * order. A burst costs disk (text stores about 3x its level-1 size); a
 * step that prints at a person's or a compiler's pace is compressed whole.
 *
 * A block is also cut every FLUSH_EVERY_MS while output is pending, so a
 * follower (`kiln history logs --follow`) sees a slow step's lines soon:
 * the file is whole members, but for the one being written. The step
 * waits only if MAX_PENDING blocks are not yet written (a slow disk).
 * A failure to write the log (a full disk) is logged and the rest of the
 * output dropped: the build goes on, and the step never waits on a stream
 * that will not drain.
 */
import { createWriteStream } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Writable } from 'node:stream';
import { crc32, gzip } from 'node:zlib';
import type { Logger } from '../log.js';

/** Fast compression: a step's log is written once and read rarely. */
const GZIP_LEVEL = 1;
/** Output gathered before a block is cut: big enough that a block's own cost is lost in it. */
const BLOCK_BYTES = 512 * 1024;
/** zlib's output buffer: one block's member in one go, even stored (a few bytes of framing). */
const OUTPUT_CHUNK = BLOCK_BYTES + 4096;
/** Blocks kept for reuse: what is pending, and one being gathered. */
const SPARE_BLOCKS = 4;
/** How long output may wait before it is cut into a block (and so reaches the file), for `--follow`. */
const FLUSH_EVERY_MS = 250;
/** Blocks deflated at once: one per core but one, left to the step and to kiln reading it. */
const MAX_DEFLATING = Math.max(1, availableParallelism() - 1);
/** Blocks cut but not yet written before the step waits (8 MiB). */
const MAX_PENDING = 16;

/** One step's log file (see the file's comment). */
export class StepLogFile {
  /** The file's name in the build's folder. */
  readonly file: string;
  readonly stream: Writable;
  /** Resolves once the file is complete on disk (or writing it failed). */
  readonly closed: Promise<void>;
  /** Bytes of output seen. */
  bytes = 0;

  constructor(filePath: string, logger: Logger | undefined) {
    this.file = filePath.slice(filePath.lastIndexOf('/') + 1);
    const out = createWriteStream(filePath, { flags: 'wx' });
    let failed = false;
    let closed!: () => void;
    this.closed = new Promise((resolve) => (closed = resolve));

    /** The block being gathered. */
    let block: Buffer | undefined;
    let filled = 0;
    const spare: Buffer[] = [];
    /** Buffers of stored members, once written. */
    const spareFramed: Buffer[] = [];
    let deflating = 0;
    let pending = 0;
    /** Appends each block's output in order. */
    let appended: Promise<void> = Promise.resolve();
    /** The step's write callback, held while MAX_PENDING blocks wait. */
    let waiting: (() => void) | undefined;
    let flushTimer: NodeJS.Timeout | undefined;

    const release = (): void => {
      const next = waiting;
      waiting = undefined;
      next?.();
    };
    const fail = (err: unknown): void => {
      if (failed) return;
      failed = true;
      logger?.warn({ err, file: filePath }, 'writing a step log to the build history failed; the rest of its output is not kept');
      clearTimeout(flushTimer);
      out.destroy();
      release();
      closed();
    };
    const append = (data: Buffer): Promise<void> =>
      new Promise((resolve, reject) => {
        if (failed) return resolve();
        out.write(data, (err) => (err === null || err === undefined ? resolve() : reject(err)));
      });
    const cut = (): void => {
      clearTimeout(flushTimer);
      flushTimer = undefined;
      if (block === undefined || filled === 0) return;
      const whole = block;
      const input = filled === whole.length ? whole : whole.subarray(0, filled);
      block = undefined;
      filled = 0;
      let output: Promise<Buffer>;
      let framed: Buffer | undefined;
      if (deflating < MAX_DEFLATING) {
        deflating++;
        output = deflatedMember(input).finally(() => {
          deflating--;
          if (spare.length < SPARE_BLOCKS) spare.push(whole);
        });
        // Observed now, awaited in turn: a failure must not count as unhandled meanwhile.
        output.catch(() => {});
      } else {
        framed = storedMember(input, spareFramed.pop() ?? Buffer.allocUnsafeSlow(FRAMED_BYTES));
        if (spare.length < SPARE_BLOCKS) spare.push(whole);
        output = Promise.resolve(framed);
      }
      pending++;
      appended = appended
        .then(() => output)
        .then(append)
        .then(() => {
          pending--;
          // The whole buffer the member was framed in, for the next one.
          if (framed !== undefined && spareFramed.length < SPARE_BLOCKS) spareFramed.push(Buffer.from(framed.buffer, framed.byteOffset, FRAMED_BYTES));
          if (pending < MAX_PENDING) release();
        });
      appended.catch(fail);
    };
    const cutSoon = (): void => {
      if (flushTimer !== undefined) return;
      flushTimer = setTimeout(cut, FLUSH_EVERY_MS);
      flushTimer.unref();
    };

    out.on('error', fail).on('close', () => closed());
    this.stream = new Writable({
      write: (chunk: Buffer, _encoding, done) => {
        if (failed) return done();
        this.bytes += chunk.length;
        // Copied: the writer may reuse its buffer once this returns.
        for (let offset = 0; offset < chunk.length; ) {
          block ??= spare.pop() ?? Buffer.allocUnsafeSlow(BLOCK_BYTES);
          const copied = chunk.copy(block, filled, offset);
          filled += copied;
          offset += copied;
          if (filled === block.length) cut();
        }
        if (filled > 0) cutSoon();
        if (pending < MAX_PENDING) done();
        else waiting = done;
      },
      final: (done) => {
        cut();
        // No output is still a gzip file: one empty member.
        if (this.bytes === 0) appended = append(storedMember(Buffer.alloc(0)));
        appended
          .then(() => {
            if (!failed) out.end();
          })
          .catch(fail);
        done();
      },
    });
  }
}

/** `input` as one gzip member, compressed on zlib's thread pool. */
function deflatedMember(input: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => gzip(input, { level: GZIP_LEVEL, chunkSize: OUTPUT_CHUNK }, (err, out) => (err === null ? resolve(out) : reject(err))));
}

/** The most a stored deflate block holds (its length is 16 bits). */
const STORED_BLOCK_MAX = 0xffff;
/** gzip's header: deflate, no flags, no mtime, fastest, Unix. */
const GZIP_HEADER = Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 3]);

/** The size of `bytes`' stored member: header, a 5-byte head per stored block, CRC-32 and size. */
function storedMemberLength(bytes: number): number {
  return GZIP_HEADER.length + 5 * Math.max(1, Math.ceil(bytes / STORED_BLOCK_MAX)) + bytes + 8;
}

/** A buffer that holds the stored member of any block. */
const FRAMED_BYTES = storedMemberLength(BLOCK_BYTES);

/**
 * `input` as a gzip member of stored deflate blocks (RFC 1951 3.2.4, RFC
 * 1952), framed here: a copy and a CRC, without a zlib stream's set-up.
 * Written into `into` if it is large enough.
 */
function storedMember(input: Buffer, into?: Buffer): Buffer {
  const length = storedMemberLength(input.length);
  const out = into !== undefined && into.length >= length ? into.subarray(0, length) : Buffer.allocUnsafeSlow(length);
  let at = GZIP_HEADER.copy(out, 0);
  let offset = 0;
  do {
    const size = Math.min(STORED_BLOCK_MAX, input.length - offset);
    const last = offset + size === input.length;
    // BFINAL, then BTYPE 00 (stored); the block is byte aligned, LEN and its one's complement follow.
    out[at] = last ? 1 : 0;
    out.writeUInt16LE(size, at + 1);
    out.writeUInt16LE(~size & 0xffff, at + 3);
    at += 5;
    at += input.copy(out, at, offset, offset + size);
    offset += size;
  } while (offset < input.length);
  out.writeUInt32LE(crc32(input) >>> 0, at);
  out.writeUInt32LE(input.length >>> 0, at + 4);
  return out;
}
