import assert from 'node:assert/strict';
import { describe, it, mock } from 'node:test';
import { Writable } from 'node:stream';
import stripAnsi from 'strip-ansi';
import { createRenderer } from '../../../src/progress/index.js';
import { createPlainRenderer } from '../../../src/progress/plain.js';
import { createSummaryCollector, summaryLines } from '../../../src/progress/summary.js';
import { createTtyRenderer, wantsColor } from '../../../src/progress/tty.js';
import { cleanLine, createTtyView } from '../../../src/progress/tty-view.js';
import type { ProgressEvent } from '../../../src/progress/types.js';

const A = 'sha256:aaaa';
const B = 'sha256:bbbb';
const C = 'sha256:cccc';
const T = '2024-05-01T10:00:00.000Z';
const SIZE = { columns: 40, rows: 20 };

/** A view on a fake clock, and a way to send it events at a time. */
function fakeView(logLines?: number) {
  let clock = 0;
  const view = createTtyView({ now: () => clock, color: false, ...(logLines === undefined ? {} : { logLines }) });
  const at = (ms: number, event: unknown): void => {
    clock = ms;
    view.emit(event as ProgressEvent);
  };
  return { view, at, tick: (ms: number) => (clock = ms) };
}

describe('tty view', () => {
  it('shows a running step with its time and last lines, then collapses it to one line', () => {
    const { view, at, tick } = fakeView(3);
    at(0, { type: 'vertex', digest: A, name: 'fetch base', inputs: [], started: T, completed: T, cached: true });
    at(100, { type: 'vertex', digest: B, name: 'compile', inputs: [A], started: T, cached: false });
    at(200, { type: 'log', vertex: B, stream: 1, data: 'one\ntwo\nthree\nfour\nfi', timestamp: T });
    tick(1300);
    assert.deepEqual(view.takeFinished(SIZE), ['=> [fetch base]                   CACHED']);
    assert.deepEqual(view.frame(SIZE), [
      '[+] Building 1.3s (1 done, 1 running)',
      '=> [compile]                        1.2s',
      '   | three',
      '   | four',
      '   | fi',
    ]);
    at(1500, { type: 'log', vertex: B, stream: 1, data: 've\n', timestamp: T });
    at(2300, { type: 'vertex', digest: B, name: 'compile', inputs: [A], started: T, completed: T, cached: false });
    assert.deepEqual(view.takeFinished(SIZE), [`=> [compile]${' '.repeat(19)}DONE 2.2s`]);
    assert.deepEqual(view.takeFinished(SIZE), [], 'each finished line is handed out once');
    assert.deepEqual(view.frame(SIZE), ['[+] Building 2.3s (2 done, 0 running)']);
    assert.equal(view.busy(), false);
  });

  it('shows why a step reruns under it, running and finished; never under a cached one', () => {
    const { view, at } = fakeView(1);
    const reason = { kind: 'changed', fields: [{ path: 'meta.args[2]', old: '"make"', new: '"make -j4"' }], inputs: [] };
    at(0, { type: 'vertex', digest: B, name: 'compile', inputs: [], started: T, cached: false, reason });
    assert.deepEqual(view.frame({ columns: 60, rows: 20 }).slice(1), [`=> [compile]${' '.repeat(44)}0.0s`, '   rerun: meta.args[2] changed "make" → "make -j4"']);
    at(100, { type: 'vertex', digest: B, name: 'compile', inputs: [], started: T, completed: T, cached: false, reason });
    at(100, { type: 'vertex', digest: A, name: 'base', inputs: [], started: T, completed: T, cached: true });
    assert.deepEqual(view.takeFinished({ columns: 60, rows: 20 }), [
      `=> [compile]${' '.repeat(39)}DONE 0.1s`,
      '   rerun: meta.args[2] changed "make" → "make -j4"',
      `=> [base]${' '.repeat(45)}CACHED`,
    ]);
  });

  it('keeps the last lines of a failed step with its error', () => {
    const { view, at } = fakeView(2);
    at(0, { type: 'vertex', digest: C, name: 'test', inputs: [], started: T, cached: false });
    at(10, { type: 'log', vertex: C, stream: 2, data: 'a\nb\nassertion failed', timestamp: T });
    at(500, { type: 'vertex', digest: C, name: 'test', inputs: [], started: T, completed: T, cached: false, error: 'exit code 1' });
    at(600, { type: 'vertex', digest: C, name: 'test', inputs: [], started: T, completed: T, cached: false, error: 'cancelled' });
    assert.deepEqual(view.takeFinished(SIZE), ['=> ERROR [test]                     0.5s', '   | b', '   | assertion failed', '   ERROR: exit code 1']);
  });

  it('shows counters, bytes as sizes, and outputs as steps', () => {
    const { view, at } = fakeView();
    at(0, { type: 'vertex', digest: A, name: 'local://context', inputs: [], started: T, cached: false });
    at(10, { type: 'status', vertex: A, id: 'hashing files', current: 12, total: 40 });
    at(20, { type: 'status', vertex: A, id: 'hashing bytes', current: 1536, total: 3 * 1024 * 1024, unit: 'bytes' });
    at(30, { type: 'export', output: 0, name: 'image reg/app:v1 (push)', started: T });
    at(40, { type: 'export-status', output: 0, id: 'bytes pushed', current: 2048, total: 4096 });
    const wide = { columns: 100, rows: 20 };
    const frame = view.frame(wide);
    assert.match(frame[1] ?? '', /^=> \[local:\/\/context\] hashing files 12 \/ 40, hashing bytes 1\.5 KiB \/ 3\.0 MiB +0\.0s$/);
    assert.equal(frame[1]?.length, 100);
    assert.match(frame[2] ?? '', /^=> \[export image reg\/app:v1 \(push\)\] bytes pushed 2\.0 KiB \/ 4\.0 KiB +0\.0s$/);
  });

  it('does not show a step running whose counters are done and that printed nothing (keyed, then waiting)', () => {
    const { view, at } = fakeView();
    at(0, { type: 'vertex', digest: A, name: 'local://context', inputs: [], started: T, cached: false });
    at(10, { type: 'status', vertex: A, id: 'hashing files', current: 3, total: 3, completed: T });
    assert.deepEqual(view.frame(SIZE), ['[+] Building 0.0s (0 done, 0 running)']);
    assert.equal(view.busy(), false);
    at(20, { type: 'vertex', digest: A, name: 'local://context', inputs: [], started: T, completed: T, cached: true });
    assert.deepEqual(view.takeFinished(SIZE), ['=> [local://context]              CACHED']);
  });

  it('fits the terminal: lines cut to the width, output lines shrunk to the height', () => {
    const { view, at } = fakeView(6);
    for (const [i, d] of [A, B, C].entries()) {
      at(0, { type: 'vertex', digest: d, name: `a step with a rather long name number ${i}`, inputs: [], started: T, cached: false });
      at(0, { type: 'log', vertex: d, stream: 1, data: '1\n2\n3\n4\n5\n6\n', timestamp: T });
    }
    const frame = view.frame({ columns: 30, rows: 10 });
    // 10 rows: the headline, 3 steps, and (10 - 2 - 3) / 3 = 1 output line each.
    assert.equal(frame.length, 7);
    for (const line of frame) assert.ok(line.length <= 30, line);
    assert.match(frame[1] ?? '', /^=> \[a step with a rather… 0\.0s$/);
  });

  it('cleans process output to one terminal line', () => {
    assert.equal(cleanLine('progress 10%\rprogress 50%\rprogress 100%\r'), 'progress 100%');
    assert.equal(cleanLine('\u001b[31mred\u001b[0m\tx\u0007'), 'red    x');
  });

  it('colours only when asked', () => {
    const colored = createTtyView({ now: () => 0, color: true });
    colored.emit({ type: 'vertex', digest: A, name: 'x', inputs: [], started: T, completed: T, cached: true });
    const line = colored.takeFinished(SIZE)[0] ?? '';
    assert.notEqual(line, stripAnsi(line));
    assert.equal(wantsColor({ hasColors: () => true } as never, { NO_COLOR: '1' }), false);
    assert.equal(wantsColor({ hasColors: () => true } as never, { NO_COLOR: '' }), true);
    assert.equal(wantsColor({} as never, {}), false);
  });
});

/** A terminal-like stream: a size, isTTY, and what was written. */
function terminal(columns: number, rows: number) {
  const chunks: string[] = [];
  const out = Object.assign(
    new Writable({
      write(chunk: Buffer, _encoding, callback) {
        chunks.push(chunk.toString());
        callback();
      },
    }),
    { columns, rows, isTTY: true },
  );
  return { out, text: () => chunks.join('') };
}

describe('tty renderer', () => {
  it('ends with the finished steps and the summary, digests included', async () => {
    const { out, text } = terminal(60, 20);
    let clock = 0;
    const r = createTtyRenderer(out, { now: () => clock, color: false });
    r.emit({ type: 'vertex', digest: A, name: 'compile', inputs: [], started: T, cached: false });
    clock = 1500;
    r.emit({ type: 'vertex', digest: A, name: 'compile', inputs: [], started: T, completed: T, cached: false });
    r.emit({ type: 'export', output: 0, name: 'oci out.tar', started: T });
    clock = 2000;
    r.emit({ type: 'export', output: 0, name: 'oci out.tar', completed: T, digest: 'sha256:1234' });
    await r.close();
    r.emit({ type: 'vertex', digest: B, name: 'late', inputs: [], started: T, cached: false });
    const shown = stripAnsi(text());
    assert.match(shown, /=> \[compile\] +DONE 1\.5s\n/);
    assert.match(shown, /=> \[export oci out\.tar\] +DONE 0\.5s\n/);
    assert.match(shown, /Built in 2\.0s: 1 step run, 0 cached\n {2}oci out\.tar {2}sha256:1234\n$/);
    assert.ok(!shown.includes('late'));
  });

  it('draws at most one frame per 100 ms however many events come, and again on a resize', async () => {
    mock.timers.enable({ apis: ['setInterval'] });
    try {
      const { out, text } = terminal(60, 20);
      let clock = 0;
      const r = createTtyRenderer(out, { now: () => clock, color: false });
      const frames = (): number => stripAnsi(text()).split('[+] Building').length - 1;
      r.emit({ type: 'vertex', digest: A, name: 'chatty', inputs: [], started: T, cached: false });
      for (let i = 0; i < 1000; i++) r.emit({ type: 'log', vertex: A, stream: 1, data: `line ${i}\n`, timestamp: T });
      assert.equal(frames(), 0, 'nothing drawn between ticks');
      clock = 100;
      mock.timers.tick(100);
      assert.equal(frames(), 1);
      assert.match(stripAnsi(text()), /\| line 999\n?/);
      Object.assign(out, { columns: 40 });
      out.emit('resize');
      clock = 200;
      mock.timers.tick(100);
      assert.equal(frames(), 2, 'the resized terminal gets a new frame');
      await r.close();
    } finally {
      mock.timers.reset();
    }
  });

  it('is what auto picks on a terminal, and plain elsewhere', async () => {
    const tty = terminal(60, 20);
    const r = createRenderer('auto', tty.out);
    r.emit({ type: 'vertex', digest: A, name: 'x', inputs: [], started: T, completed: T, cached: true });
    await r.close();
    assert.match(stripAnsi(tty.text()), /=> \[x\] +CACHED\nBuilt in \d\.\ds: 0 steps run, 1 cached\n$/);
    const pipe = terminal(60, 20);
    Object.assign(pipe.out, { isTTY: false });
    const p = createRenderer('auto', pipe.out);
    p.emit({ type: 'vertex', digest: A, name: 'x', inputs: [], started: T, cached: false });
    await p.close();
    assert.match(pipe.text(), /^#1 \[x\]\nFailed in \d\.\ds: 0 steps run, 0 cached\n$/);
  });
});

describe('build summary', () => {
  it('counts run, cached and failed steps once each, and lists the outputs in order', () => {
    const s = createSummaryCollector();
    const events: unknown[] = [
      { type: 'vertex', digest: A, name: 'a', inputs: [], started: T, completed: T, cached: true },
      { type: 'vertex', digest: B, name: 'b', inputs: [], started: T, completed: T, cached: false },
      { type: 'vertex', digest: B, name: 'b', inputs: [], started: T, completed: T, cached: false, error: 'later' },
      { type: 'export', output: 1, name: 'image r/x:1 (push)', started: T },
      { type: 'export', output: 0, name: 'local out', started: T },
      { type: 'export', output: 0, name: 'local out', completed: T },
      { type: 'export', output: 1, name: 'image r/x:1 (push)', completed: T, error: 'push refused' },
    ];
    for (const e of events) s.emit(e as ProgressEvent);
    assert.deepEqual(summaryLines(s.summary(), 1234), ['Failed in 1.2s: 1 step run, 1 cached', '  local out  written', '  image r/x:1 (push)  ERROR: push refused']);
  });

  it('is nothing when no step started and no output was written', () => {
    assert.deepEqual(summaryLines(createSummaryCollector().summary(), 10), []);
  });

  it('is printed by the plain renderer when asked, after the steps', async () => {
    const { out, text } = terminal(80, 24);
    let clock = 0;
    const r = createPlainRenderer(out, { now: () => clock, summary: true });
    r.emit({ type: 'export', output: 0, name: 'image r/x:1', started: T });
    r.emit({ type: 'export-status', output: 0, id: 'bytes pushed', current: 3 * 1024 * 1024, completed: T });
    clock = 300;
    r.emit({ type: 'export', output: 0, name: 'image r/x:1', completed: T, digest: 'sha256:feed' });
    await r.close();
    assert.equal(text(), ['#1 [export image r/x:1]', '#1 bytes pushed 3.0 MiB done', '#1 DONE 0.3s', 'Built in 0.3s: 0 steps run, 0 cached', '  image r/x:1  sha256:feed', ''].join('\n'));
  });
});

describe('pausing progress while a shell has the terminal', () => {
  it('tty: pause clears the live part and draws nothing until resume, then draws what came meanwhile', async () => {
    mock.timers.enable({ apis: ['setInterval'] });
    try {
      const { out, text } = terminal(60, 20);
      let clock = 0;
      const r = createTtyRenderer(out, { now: () => clock, color: false });
      r.emit({ type: 'vertex', digest: A, name: 'running', inputs: [], started: T, cached: false });
      clock = 100;
      mock.timers.tick(100);
      assert.match(stripAnsi(text()), /\[\+\] Building/);
      await r.pause();
      const atPause = text().length;
      r.emit({ type: 'vertex', digest: A, name: 'running', inputs: [], started: T, completed: T, cached: false });
      for (let i = 1; i <= 5; i++) {
        clock = 100 + i * 100;
        mock.timers.tick(100);
      }
      assert.equal(text().length, atPause, 'nothing is written while paused');
      r.resume();
      clock = 800;
      mock.timers.tick(100);
      assert.match(stripAnsi(text().slice(atPause)), /=> \[running\] +DONE \d\.\ds/, 'what came while paused is drawn on resume');
      await r.close();
    } finally {
      mock.timers.reset();
    }
  });

  it('plain: events that come while paused are written, in order, on resume (or close)', async () => {
    let written = '';
    const out = new Writable({
      write(chunk: Buffer, _enc, done) {
        written += chunk.toString();
        done();
      },
    });
    const r = createRenderer('plain', out);
    r.emit({ type: 'vertex', digest: A, name: 'first', inputs: [], started: T, cached: false });
    await r.pause();
    const atPause = written;
    r.emit({ type: 'vertex', digest: B, name: 'second', inputs: [], started: T, cached: false });
    r.emit({ type: 'vertex', digest: C, name: 'third', inputs: [], started: T, cached: false });
    assert.equal(written, atPause, 'nothing is written while paused');
    r.resume();
    assert.match(written.slice(atPause.length), /^#2 \[second\]\n#3 \[third\]\n$/);
    await r.pause();
    r.emit({ type: 'vertex', digest: C, name: 'third', inputs: [], started: T, completed: T, cached: false });
    await r.close();
    assert.match(written, /#3 DONE/, 'close writes what was held');
  });
});
