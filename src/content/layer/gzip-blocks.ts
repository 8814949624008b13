/**
 * gzip that uses every core, with deterministic bytes. One zlib stream is
 * one thread: on a tree export it was most of the time, while the other
 * cores sat idle. So, as pigz does, the input is cut into fixed 512 KiB
 * blocks, each compressed on its own (raw deflate on zlib's thread pool,
 * several at once) with the 32 KiB before it as its dictionary, so the ratio
 * stays close to one stream's. Each block ends with a sync flush (byte
 * aligned), so the blocks concatenate into one valid deflate stream; a final
 * empty block, the CRC-32 and the size close the gzip member.
 *
 * The bytes depend only on the input, the level and zlib's version: not on
 * the number of cores, the timing, or how the input was chunked. They differ
 * from a one-stream gzip of the same input (as pigz's do), and any gzip
 * reader reads them.
 */
import { availableParallelism } from 'node:os';
import { constants, crc32, deflateRaw, type ZlibOptions } from 'node:zlib';

/**
 * The tar's chunk size too (CHUNK_BYTES in fs/tar-entries.ts), so that its
 * chunks are the blocks. Big enough that what each block costs on its own (a new zlib stream, its
 * dictionary, a flush) is lost in the compression: at 128 KiB (pigz's size,
 * but pigz reuses its streams) one block at a time ran 20% slower than one
 * stream; at 512 KiB as fast, with the same ratio.
 */
const BLOCK = 512 * 1024;

/** zlib's output buffer: one block's output in one go, even incompressible (stored blocks add a few bytes). */
const OUTPUT_CHUNK = BLOCK + 4096;

/** deflate's window: what a block may refer back to. */
const WINDOW = 32 * 1024;

/** A final, empty deflate block (fixed Huffman, end of block): what Z_FINISH on no input writes. */
const LAST_BLOCK = Buffer.from([0x03, 0x00]);

/** Blocks compressing at once: one per core, and one more so a core never waits for the next. */
const IN_FLIGHT = availableParallelism() + 1;

/**
 * The gzip member of `input` at `level` (0-9), in blocks compressed in parallel.
 * Pull it through a buffering stream (Readable.from) so that compression
 * continues while the consumer writes.
 */
export async function* gzipBlocks(input: AsyncIterable<Uint8Array>, level: number): AsyncGenerator<Buffer> {
  yield gzipHeader(level);
  let crc = 0;
  let size = 0;
  let previous: Buffer | undefined;
  const inFlight: Promise<Buffer>[] = [];
  for await (const block of fixedBlocks(input)) {
    crc = crc32(block, crc);
    size = (size + block.length) >>> 0;
    const compressed = compressBlock(block, previous, level);
    // Observed now, awaited in turn: a failure must not count as unhandled meanwhile.
    compressed.catch(() => {});
    inFlight.push(compressed);
    previous = block;
    if (inFlight.length >= IN_FLIGHT) yield await (inFlight.shift() as Promise<Buffer>);
  }
  while (inFlight.length > 0) yield await (inFlight.shift() as Promise<Buffer>);
  const trailer = Buffer.alloc(8);
  trailer.writeUInt32LE(crc, 0);
  trailer.writeUInt32LE(size, 4);
  yield Buffer.concat([LAST_BLOCK, trailer]);
}

/**
 * The 10-byte gzip header zlib writes itself: no name, mtime 0, the extra
 * flags byte for the level (2: slowest, 4: fastest), OS 3 (Unix).
 */
function gzipHeader(level: number): Buffer {
  const extraFlags = level === 9 ? 2 : level < 2 ? 4 : 0;
  return Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, extraFlags, 3]);
}

/**
 * The input re-cut into blocks of exactly BLOCK bytes (the last may be
 * shorter). A chunk that starts at a block's start gives its whole blocks
 * as they are, without a copy: a layer's tar comes in chunks of this size
 * (fs/tar-entries.ts), so most blocks are never copied.
 */
async function* fixedBlocks(input: AsyncIterable<Uint8Array>): AsyncGenerator<Buffer> {
  let parts: Uint8Array[] = [];
  let length = 0;
  for await (const chunk of input) {
    let at = 0;
    if (length === 0) {
      for (; chunk.length - at >= BLOCK; at += BLOCK) yield Buffer.from(chunk.buffer, chunk.byteOffset + at, BLOCK);
      if (at === chunk.length) continue;
    }
    parts.push(at === 0 ? chunk : chunk.subarray(at));
    length += chunk.length - at;
    if (length < BLOCK) continue;
    const all = Buffer.concat(parts, length);
    at = 0;
    for (; length - at >= BLOCK; at += BLOCK) yield all.subarray(at, at + BLOCK);
    parts = at < length ? [all.subarray(at)] : [];
    length -= at;
  }
  if (length > 0) yield Buffer.concat(parts, length);
}

/** One block as raw deflate ending in a sync flush, primed with the end of the block before it. */
function compressBlock(block: Buffer, previous: Buffer | undefined, level: number): Promise<Buffer> {
  const options: ZlibOptions = {
    level,
    chunkSize: OUTPUT_CHUNK,
    finishFlush: constants.Z_SYNC_FLUSH,
    ...(previous === undefined ? {} : { dictionary: previous.subarray(-WINDOW) }),
  };
  return new Promise((resolve, reject) => deflateRaw(block, options, (err, out) => (err === null ? resolve(out) : reject(err))));
}
