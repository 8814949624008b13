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
  it('quotes the same last lines past the clip as before it, whatever the chunks', async () => {
    // The last ten lines of everything written, each cut to its first 500 characters, as tail() keeps them.
    const reference = (text: string): string[] => {
      const lines = text.split('\n');
      const partial = lines.pop() ?? '';
      return [...lines.map((l) => l.slice(0, 500)), ...(partial === '' ? [] : [partial.slice(-500)])].slice(-10);
    };
    const line = (i: number): string => `${i} ${'é'.repeat(i % 7)}${i % 50 === 0 ? 'x'.repeat(900) : ''} ü€\n`;
    let text = '';
    for (let i = 0; text.length < LOG_LIMIT_BYTES + 300_000; i++) text += line(i);
    // Ending with a line break and without one: all ten lines quoted are whole lines, or nine and the partial one.
    for (const [end, size] of [['', 1000], ['', 300_001], ['no line break at the end é', 4099], ['no line break at the end é', 65_536]] as const) {
      const bytes = Buffer.from(text + end);
      const output = processOutput('v', { emit: () => undefined });
      const chunks: Buffer[] = [];
      // The last chunk holds many lines, so the lines quoted come from one cut past the clip.
      const last = bytes.length - 3000;
      for (let at = 0; at < last; at += size) chunks.push(bytes.subarray(at, Math.min(at + size, last)));
      chunks.push(bytes.subarray(last));
      for (const chunk of chunks) await new Promise<void>((resolve) => output.stdout.write(chunk, () => resolve()));
      output.flush();
      assert.deepEqual(output.tail(), reference(text + end), `chunks of ${size} bytes`);
    }
  });
});
