import assert from 'node:assert/strict';
import { createCipheriv } from 'node:crypto';
import { describe, it } from 'node:test';
import { gunzipSync, gzipSync } from 'node:zlib';
import { gzipBlocks } from '../../../../src/content/layer/gzip-blocks.js';
import { chunked } from './fixture.js';

async function collect(chunks: AsyncIterable<Buffer>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const chunk of chunks) out.push(chunk);
  return Buffer.concat(out);
}

describe('gzipBlocks', () => {
  // 2.3 MB over several 512 KiB blocks: text that repeats across block boundaries, then incompressible bytes.
  const text = Buffer.from('the quick brown fox jumps over the lazy dog, again and again\n'.repeat(25_000));
  const noise = createCipheriv('aes-128-ctr', Buffer.alloc(16), Buffer.alloc(16)).update(Buffer.alloc(800_000));
  const input = Buffer.concat([text, noise]);

  it('is a gzip member any reader reads back, at every level', async () => {
    for (const level of [0, 1, 6, 9]) {
      const gz = await collect(gzipBlocks(chunked(input, 70_000), level));
      assert.deepEqual(gunzipSync(gz), input, `level ${level}`);
      assert.deepEqual([...gz.subarray(0, 10)], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, level === 9 ? 2 : level < 2 ? 4 : 0, 3]);
    }
  });

  it('gives the same bytes however the input is chunked, about as small as one stream', async () => {
    const a = await collect(gzipBlocks(chunked(input, 1000), 6));
    const b = await collect(gzipBlocks(chunked(input, 333_333), 6));
    const c = await collect(gzipBlocks(chunked(input, input.length), 6));
    assert.deepEqual(b, a);
    assert.deepEqual(c, a);
    assert.ok(a.length < gzipSync(input).length * 1.01, `${a.length} vs ${gzipSync(input).length}`);
  });

  it('compresses empty input to an empty gzip member', async () => {
    assert.equal(gunzipSync(await collect(gzipBlocks(chunked(Buffer.alloc(0)), 6))).length, 0);
  });
});
