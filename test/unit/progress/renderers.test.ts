import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Writable } from 'node:stream';
import { createRenderer, teeProgress } from '../../../src/progress/index.js';
import { createPlainRenderer } from '../../../src/progress/plain.js';
import { createRawJsonRenderer } from '../../../src/progress/rawjson.js';
import type { ProgressEvent } from '../../../src/progress/types.js';

/** A stream that keeps what is written to it. */
function capture(): { out: Writable; text: () => string } {
  const chunks: string[] = [];
  const out = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk.toString());
      callback();
    },
  });
  return { out, text: () => chunks.join('') };
}

const A = 'sha256:aaaa';
const B = 'sha256:bbbb';
const C = 'sha256:cccc';
const T = '2024-05-01T10:00:00.000Z';

describe('plain renderer', () => {
  it('renders a scripted build exactly', async () => {
    const { out, text } = capture();
    let clock = 0;
    const renderer = createPlainRenderer(out, { now: () => clock });
    const at = (ms: number, event: unknown): void => {
      clock = ms;
      renderer.emit(event as ProgressEvent);
    };
    at(1000, { type: 'vertex', digest: A, name: 'local://context', inputs: [], started: T, cached: false });
    at(1000, { type: 'vertex', digest: B, name: 'docker-image://alpine', inputs: [], started: T, completed: T, cached: true });
    at(1100, { type: 'status', vertex: A, id: 'hashing files', current: 10, total: 100 });
    at(1200, { type: 'status', vertex: A, id: 'hashing files', current: 50, total: 100 });
    at(1400, { type: 'status', vertex: A, id: 'hashing files', current: 90, total: 100 });
    at(1500, { type: 'status', vertex: A, id: 'hashing files', current: 100, total: 100 });
    at(1512, { type: 'log', vertex: A, stream: 1, data: 'hello\nwor', timestamp: T });
    at(1600, { type: 'log', vertex: A, stream: 2, data: 'warning: x\r\n', timestamp: T });
    at(1650, { type: 'log', vertex: A, stream: 1, data: 'ld', timestamp: T });
    at(1700, { type: 'vertex', digest: A, name: 'local://context', inputs: [], started: T, completed: T, cached: false });
    at(1800, { type: 'vertex', digest: C, name: 'compile', inputs: [A, B], started: T, cached: false });
    at(1850, { type: 'status', vertex: C, id: 'copying', current: 3, started: T, completed: T });
    at(1900, { type: 'log', vertex: 'sha256:dddd', stream: 1, data: 'stray\n', timestamp: T });
    at(2000, { type: 'vertex', digest: C, name: 'compile', inputs: [A, B], started: T, completed: T, cached: false, error: 'exit code 2' });
    at(2050, { type: 'vertex', digest: C, name: 'compile', inputs: [A, B], started: T, completed: T, cached: false, error: 'again' });
    at(2060, null);
    at(2070, { type: 'bogus' });
    at(2100, { type: 'log', vertex: C, stream: 2, data: 'late, no newline', timestamp: T });
    await renderer.close();
    renderer.emit({ type: 'log', vertex: C, stream: 1, data: 'after close\n', timestamp: T });

    assert.equal(
      text(),
      [
        '#1 [local://context]',
        '#2 [docker-image://alpine]',
        '#2 CACHED',
        '#1 hashing files 10/100',
        '#1 hashing files 90/100',
        '#1 0.512 hello',
        '#1 0.600 warning: x',
        '#1 0.700 world',
        '#1 hashing files 100/100',
        '#1 DONE 0.7s',
        '#3 [compile]',
        '#3 copying 3 done',
        '#4 0.000 stray',
        '#3 ERROR: exit code 2',
        '#3 0.300 late, no newline',
        '',
      ].join('\n'),
    );
  });

  it('shows a completion that arrives without a start', async () => {
    const { out, text } = capture();
    const renderer = createPlainRenderer(out, { now: () => 0 });
    renderer.emit({ type: 'vertex', digest: A, name: 'a', inputs: [], completed: T, cached: false });
    await renderer.close();
    assert.equal(text(), '#1 [a]\n#1 DONE 0.0s\n');
  });

  it('renders outputs as steps after the ops, with terse counters', async () => {
    const { out, text } = capture();
    let clock = 0;
    const renderer = createPlainRenderer(out, { now: () => clock });
    renderer.emit({ type: 'vertex', digest: A, name: 'a', inputs: [], started: T, completed: T, cached: true });
    renderer.emit({ type: 'export', output: 0, name: 'oci out.tar', started: T });
    renderer.emit({ type: 'export-status', output: 0, id: 'layers compressed', current: 1, completed: T });
    clock = 100;
    renderer.emit({ type: 'export-status', output: 0, id: 'bytes written', current: 4096 });
    renderer.emit({ type: 'export-status', output: 0, id: 'bytes written', current: 10240, completed: T });
    clock = 300;
    renderer.emit({ type: 'export', output: 0, name: 'oci out.tar', completed: T });
    renderer.emit({ type: 'export', output: 1, name: 'image example.com/app:v1 (push)', started: T });
    renderer.emit({ type: 'export', output: 1, name: 'image example.com/app:v1 (push)', completed: T, error: 'registry said no' });
    await renderer.close();
    assert.equal(
      text(),
      [
        '#1 [a]',
        '#1 CACHED',
        '#2 [export oci out.tar]',
        '#2 layers compressed 1 done',
        '#2 bytes written 4.0 KiB',
        '#2 bytes written 10.0 KiB done',
        '#2 DONE 0.3s',
        '#3 [export image example.com/app:v1 (push)]',
        '#3 ERROR: registry said no',
        '',
      ].join('\n'),
    );
  });
});

describe('rerun reasons in plain and rawjson', () => {
  it('plain prints one rerun line under the vertex, once; rawjson keeps the reason object', async () => {
    const reason = { kind: 'changed', fields: [{ path: 'meta.args[2]', old: '"make"', new: '"make -j4"' }], inputs: ['base'] } as const;
    const started = { type: 'vertex', digest: A, name: 'compile', inputs: [], started: T, cached: false, reason } as const;
    const plain = capture();
    const renderer = createPlainRenderer(plain.out, { now: () => 0 });
    renderer.emit(started);
    renderer.emit({ ...started, completed: T });
    renderer.emit({ type: 'vertex', digest: B, name: 'base', inputs: [], started: T, completed: T, cached: true });
    await renderer.close();
    assert.equal(plain.text(), ['#1 [compile]', '#1 rerun: meta.args[2] changed "make" → "make -j4"; input "base" changed', '#1 DONE 0.0s', '#2 [base]', '#2 CACHED', ''].join('\n'));
    const raw = capture();
    const json = createRawJsonRenderer(raw.out);
    json.emit(started);
    await json.close();
    assert.deepEqual((JSON.parse(raw.text()) as { reason: unknown }).reason, reason);
  });
});

describe('rawjson renderer', () => {
  it('writes one JSON line per event with exactly the event fields', async () => {
    const { out, text } = capture();
    const renderer = createRawJsonRenderer(out);
    const events: unknown[] = [
      { type: 'vertex', digest: A, name: 'a', inputs: [], started: T, cached: false, internal: 'not shown' },
      { cached: true, type: 'vertex', digest: B, name: 'b', inputs: [A], started: T, completed: T },
      { type: 'vertex', digest: C, name: 'c', inputs: [A, B], started: T, completed: T, cached: false, error: 'boom' },
      { type: 'log', vertex: A, stream: 2, data: 'line\n', timestamp: T },
      { type: 'status', vertex: A, id: 'hashing files', current: 5, total: 9 },
      { type: 'export', output: 0, name: 'tar out.tar', started: T, extra: 'not shown' },
      { type: 'export-status', output: 0, id: 'bytes written', current: 512, completed: T },
      { type: 'export', output: 1, name: 'oci o.tar', completed: T, digest: 'sha256:dddd' },
      { type: 'status', vertex: A, id: 'pulling layers', current: 10, total: 20, unit: 'bytes' },
      { type: 'bogus' },
    ];
    for (const event of events) renderer.emit(event as ProgressEvent);
    await renderer.close();
    renderer.emit(events[0] as ProgressEvent);
    assert.equal(
      text(),
      [
        `{"type":"vertex","digest":"${A}","name":"a","inputs":[],"started":"${T}","cached":false}`,
        `{"type":"vertex","digest":"${B}","name":"b","inputs":["${A}"],"started":"${T}","completed":"${T}","cached":true}`,
        `{"type":"vertex","digest":"${C}","name":"c","inputs":["${A}","${B}"],"started":"${T}","completed":"${T}","cached":false,"error":"boom"}`,
        `{"type":"log","vertex":"${A}","stream":2,"data":"line\\n","timestamp":"${T}"}`,
        `{"type":"status","vertex":"${A}","id":"hashing files","current":5,"total":9}`,
        `{"type":"export","output":0,"name":"tar out.tar","started":"${T}"}`,
        `{"type":"export-status","output":0,"id":"bytes written","current":512,"completed":"${T}"}`,
        `{"type":"export","output":1,"name":"oci o.tar","completed":"${T}","digest":"sha256:dddd"}`,
        `{"type":"status","vertex":"${A}","id":"pulling layers","current":10,"total":20,"unit":"bytes"}`,
        '',
      ].join('\n'),
    );
  });
});

describe('createRenderer and teeProgress', () => {
  const event: ProgressEvent = { type: 'vertex', digest: A, name: 'a', inputs: [], started: T, cached: false };

  it('picks the renderer by mode; auto is plain off a terminal, and plain ends with the summary', async () => {
    const rendered = async (mode: 'auto' | 'plain' | 'rawjson'): Promise<string> => {
      const { out, text } = capture();
      const renderer = createRenderer(mode, out);
      renderer.emit(event);
      await renderer.close();
      return text();
    };
    assert.match(await rendered('auto'), /^#1 \[a\]\nFailed in 0\.\ds: 0 steps run, 0 cached\n$/);
    assert.match(await rendered('plain'), /^#1 \[a\]\nFailed in 0\.\ds: 0 steps run, 0 cached\n$/);
    assert.deepEqual(JSON.parse(await rendered('rawjson')), event);
  });

  it('tee passes every event to each sink in order', () => {
    const seen: string[] = [];
    const tee = teeProgress({ emit: (e) => void seen.push(`1:${e.type}`) }, { emit: (e) => void seen.push(`2:${e.type}`) });
    tee.emit(event);
    tee.emit({ type: 'log', vertex: A, stream: 1, data: 'x', timestamp: T });
    assert.deepEqual(seen, ['1:vertex', '2:vertex', '1:log', '2:log']);
  });
});
