/**
 * A step's log file: whatever is written comes back byte for byte from a
 * gzip reader, empty or not, in chunks of any size; a burst (output faster
 * than deflate) is stored rather than waited on; output written at a pace
 * deflate keeps up with is compressed.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { gunzipSync, gzipSync } from 'node:zlib';
import { StepLogFile } from '../../../src/history/step-log-file.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'kiln-step-log-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Text that compresses about as a build log does. */
function logText(bytes: number, seed: number): Buffer {
  const lines: string[] = [];
  let size = 0;
  for (let i = 0; size < bytes; i++) {
    const line = `[${((seed + i) / 100).toFixed(2)}] CC src/module_${(i * 31 + seed) % 97}/file_${(i * 7919) % 1000}.c warning: unused ${(i * 2654435761) >>> 0}\n`;
    lines.push(line);
    size += line.length;
  }
  return Buffer.from(lines.join('')).subarray(0, bytes);
}

/** Writes `chunks` to a new log, each after `between()`; resolves with the file's bytes once it is closed. */
async function writeLog(name: string, chunks: readonly Buffer[], between: () => Promise<void> = () => Promise.resolve()): Promise<Buffer> {
  const file = path.join(dir, name);
  const log = new StepLogFile(file, undefined);
  for (const chunk of chunks) {
    await between();
    await new Promise<void>((resolve, reject) => log.stream.write(chunk, (err) => (err ? reject(err) : resolve())));
  }
  log.stream.end();
  await log.closed;
  assert.equal(log.bytes, chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  return readFileSync(file);
}

describe('a step log file', () => {
  it('is a valid gzip file with no output at all', async () => {
    const bytes = await writeLog('empty.log.gz', []);
    assert.equal(gunzipSync(bytes).length, 0);
  });

  it('gives back every byte, whatever the chunks and where the blocks are cut', async () => {
    const text = logText(3 * 1024 * 1024 + 12_345, 1);
    // Chunks smaller than, equal to and larger than a block and a stored deflate block.
    const sizes = [1, 65_535, 65_536, 524_288, 3, 700_000, 524_287, 2];
    const chunks: Buffer[] = [];
    for (let at = 0, i = 0; at < text.length; i++) {
      const size = sizes[i % sizes.length] ?? 1;
      chunks.push(Buffer.from(text.subarray(at, at + size)));
      at += size;
    }
    const bytes = await writeLog('chunks.log.gz', chunks);
    assert.ok(gunzipSync(bytes).equals(text));
  });

  it('keeps a chunk as it was written, even if its writer reuses the buffer', async () => {
    const file = path.join(dir, 'reused.log.gz');
    const log = new StepLogFile(file, undefined);
    const buffer = Buffer.alloc(1000);
    const want: Buffer[] = [];
    for (let i = 0; i < 50; i++) {
      buffer.fill(97 + (i % 26));
      want.push(Buffer.from(buffer));
      await new Promise<void>((resolve) => log.stream.write(buffer, () => resolve()));
    }
    log.stream.end();
    await log.closed;
    assert.ok(gunzipSync(readFileSync(file)).equals(Buffer.concat(want)));
  });

  it('stores a burst instead of making the step wait for deflate', async () => {
    // Written with no pause for zlib's thread pool to report back: only the first block can be deflated.
    const text = logText(8 * 1024 * 1024, 2);
    const bytes = await writeLog('burst.log.gz', [text.subarray(0, 4 * 1024 * 1024), text.subarray(4 * 1024 * 1024)]);
    assert.ok(gunzipSync(bytes).equals(text));
    assert.ok(bytes.length > text.length * 0.8, `the burst's log is ${bytes.length} bytes for ${text.length}: it was deflated, not stored`);
  });

  it('compresses output that comes at a pace deflate keeps up with', async () => {
    const block = 512 * 1024;
    const text = logText(8 * block, 3);
    const chunks = Array.from({ length: 8 }, (_, i) => text.subarray(i * block, (i + 1) * block));
    // Each pause is far longer than deflating one block takes, even on a loaded machine.
    const bytes = await writeLog('paced.log.gz', chunks, () => sleep(60));
    assert.ok(gunzipSync(bytes).equals(text));
    const oneStream = gzipSync(text, { level: 1 }).length;
    assert.ok(bytes.length < oneStream * 1.5, `the paced log is ${bytes.length} bytes, one gzip -1 stream ${oneStream}: blocks were stored`);
  });
});
