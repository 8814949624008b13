/**
 * The full-output stream of processOutput: everything the process wrote,
 * past the clip of the progress stream, with secrets masked the same way
 * (a secret split across two writes too), and the process's writes held
 * while that stream is full.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { LOG_LIMIT_BYTES, processOutput } from '../../../src/ops/exec/output.js';
import type { ProgressEvent } from '../../../src/progress/types.js';

/** A slow sink: takes one chunk at a time, each after a tick. */
function slowSink(): { stream: Writable; text: () => string; ended: () => boolean } {
  const chunks: Buffer[] = [];
  let ended = false;
  const stream = new Writable({
    highWaterMark: 1,
    write(chunk: Buffer, _e, done) {
      chunks.push(chunk);
      setImmediate(done);
    },
    final(done) {
      ended = true;
      done();
    },
  });
  return { stream, text: () => Buffer.concat(chunks).toString(), ended: () => ended };
}

function writeAll(stream: Writable, chunks: readonly string[]): Promise<void> {
  return chunks.reduce<Promise<void>>((p, c) => p.then(() => new Promise((resolve) => stream.write(c, () => resolve()))), Promise.resolve());
}

describe('process output: the full log beside progress', () => {
  it('gets every byte past the progress clip, masked, and is ended by flush', async () => {
    const events: ProgressEvent[] = [];
    const full = slowSink();
    const output = processOutput('v', { emit: (e) => events.push(e) }, [Buffer.from('hunter2-secret\n')], full.stream);
    const line = `${'y'.repeat(1023)}\n`;
    const chunks = Array.from({ length: 5 * 1024 }, () => line);
    await writeAll(output.stdout, ['the secret is hunt', 'er2-secret!\n', ...chunks]);
    await writeAll(output.stderr, ['tail hunter2-secret']);
    output.flush();
    await sleep(10);
    const progressBytes = events.filter((e) => e.type === 'log').map((e) => (e.type === 'log' ? e.data : '')).join('');
    assert.ok(progressBytes.includes('[output clipped: this step wrote more than 4 MiB]'));
    assert.ok(progressBytes.length < LOG_LIMIT_BYTES + 100);
    const text = full.text();
    assert.equal(text, `the secret is ****!\n${chunks.join('')}tail ****`);
    assert.ok(!text.includes('hunter2'));
    assert.ok(full.ended());
  });

  it("holds the process's writes while the full log is full", async () => {
    let release: (() => void) | undefined;
    let taken = 0;
    const stuck = new Writable({
      highWaterMark: 4,
      write(_chunk, _e, done) {
        taken++;
        release = done;
      },
    });
    const output = processOutput('v', { emit: () => {} }, [], stuck);
    let written = false;
    output.stdout.write('first chunk', () => (written = true));
    await sleep(20);
    assert.equal(taken, 1);
    assert.equal(written, false, 'the write is not done until the full log drains');
    release?.();
    await sleep(20);
    assert.equal(written, true);
  });
});
