/**
 * The history's files, written and read back in one process: records
 * written whole, listed newest first, found by id or prefix; step logs
 * compressed as they come, read back whole and followed while written;
 * pruning by count; a process that dies leaves no half-record listed.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, type Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { gunzipSync } from 'node:zlib';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { ERROR_CODES, KilnError } from '../../../src/errors.js';
import { BuildRecorder } from '../../../src/history/recorder.js';
import { writeLogs } from '../../../src/history/logs.js';
import { type BuildRecord, newBuildId } from '../../../src/history/record.js';
import { HistoryStore } from '../../../src/history/store.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'kiln-history-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function collect(): { out: PassThrough; text: () => string } {
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  return { out, text: () => Buffer.concat(chunks).toString('utf8') };
}

function write(stream: Writable, data: string): Promise<void> {
  return new Promise((resolve) => (stream.write(data) ? resolve() : stream.once('drain', resolve)));
}

const vertex = (digest: string, name: string, more: Record<string, unknown> = {}) => ({ type: 'vertex' as const, digest, name, inputs: [], cached: false, ...more });

describe('history store', () => {
  it('records a build: vertices, full logs (compressed), the error; lists it and finds it by prefix', async () => {
    const store = new HistoryStore(path.join(dir, 'a'));
    const recorder = await BuildRecorder.start(store, { definition: 'def.json' });
    recorder.emit(vertex('sha256:aaaa', 'step', { started: new Date().toISOString() }));
    const log = recorder.open('sha256:aaaa');
    const big = 'x'.repeat(1023) + '\n';
    for (let i = 0; i < 6 * 1024; i++) await write(log, big); // 6 MiB, more than progress keeps
    log.end('last line\n');
    recorder.emit(vertex('sha256:aaaa', 'step', { completed: new Date().toISOString(), error: 'exit 3' }));
    await recorder.finish(new KilnError(ERROR_CODES.EXEC_FAILED, 'process did not complete successfully', { op: 'step' }));

    const [listed] = await store.list();
    assert.equal(listed?.id, recorder.id);
    assert.equal(listed?.status, 'failed');
    assert.deepEqual(listed?.error, { code: 'E_EXEC_FAILED', message: 'process did not complete successfully', op: 'step' });
    const got = await store.get(recorder.id.slice(0, 17));
    assert.equal(got.vertices[0]?.log?.bytes, 6 * 1024 * 1024 + 10);
    const file = store.logPath(got.id, got.vertices[0]?.log?.file ?? '');
    assert.equal(gunzipSync(readFileSync(file)).length, 6 * 1024 * 1024 + 10);
    const { out, text } = collect();
    await writeLogs(store, got.id, out, { vertex: 'step' });
    assert.equal(text().length, 6 * 1024 * 1024 + 10);
    assert.ok(text().endsWith('x\nlast line\n'));
  });

  it('an unknown id, an ambiguous prefix and an unknown step are E_HISTORY_NOT_FOUND', async () => {
    const store = new HistoryStore(path.join(dir, 'b'));
    await assert.rejects(store.get('20990101-000000-0000'), (err: unknown) => err instanceof KilnError && err.code === ERROR_CODES.HISTORY_NOT_FOUND && /no build "20990101-000000-0000"/.test(err.message));
    await assert.rejects(store.latest(), /no build in the history/);
    await assert.rejects(store.get('../../etc'), (err: unknown) => err instanceof KilnError && err.code === ERROR_CODES.HISTORY_NOT_FOUND);
    const one = await BuildRecorder.start(store, { id: '20261202-000000-aaaa' });
    await one.finish();
    const two = await BuildRecorder.start(store, { id: '20261202-000000-aaab' });
    await two.finish();
    await assert.rejects(store.get('20261202-000000-aa'), /is the start of 2 build ids/);
    await assert.rejects(writeLogs(store, one.id, collect().out, { vertex: 'nosuch' }), /has no step "nosuch"/);
  });

  it('a folder without its record (a build that died starting) is not listed', async () => {
    const store = new HistoryStore(path.join(dir, 'c'));
    const id = await store.create();
    await writeFile(path.join(store.buildDir(id), '.record.json.1.tmp'), '{"half":');
    assert.deepEqual(await store.list(), []);
  });

  it('retention by count runs at the end of each build and keeps the newest', async () => {
    const store = new HistoryStore(path.join(dir, 'd'), { keepBuilds: 2, keepDurationMs: 3_600_000 });
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await BuildRecorder.start(store, { id: `20261202-00000${i}-0000` });
      await r.finish();
      ids.push(r.id);
    }
    assert.deepEqual((await store.list()).map((r) => r.id), [ids[3], ids[2]]);
    assert.deepEqual((await readdir(store.dir)).sort(), [ids[2], ids[3]].sort(), 'nothing else left in the folder');
    assert.deepEqual(await store.prune({ all: true }), [ids[3], ids[2]]);
    assert.deepEqual(await store.list(), []);
  });

  it('retention by duration reads the records when an id holds no time, and removes what is past it', async () => {
    const store = new HistoryStore(path.join(dir, 'h'), { keepBuilds: 50, keepDurationMs: 3_600_000 });
    // Named by a user, started (and ended) two days ago: only its record says how old it is.
    const old = await BuildRecorder.start(store, { id: 'nightly-build' });
    await old.finish();
    const [record] = await store.list();
    const twoDaysAgo = new Date(Date.now() - 48 * 3_600_000).toISOString();
    await store.write({ ...(record as BuildRecord), started: twoDaysAgo, ended: twoDaysAgo });
    const fresh = await BuildRecorder.start(store);
    await fresh.finish();
    assert.deepEqual((await store.list()).map((r) => r.id), [fresh.id]);
  });

  it('retention keeps every build that is within its count and duration, however many events they had', async () => {
    const store = new HistoryStore(path.join(dir, 'i'), { keepBuilds: 3, keepDurationMs: 3_600_000 });
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await BuildRecorder.start(store);
      for (let v = 0; v < 500; v++) {
        r.emit(vertex(`sha256:${v}`, `v${v}`, { started: 't1' }));
        r.noteKey(`sha256:${v}`, `v${v}`, `key${v}`, undefined);
        r.emit(vertex(`sha256:${v}`, `v${v}`, { cached: true, completed: 't2' }));
      }
      await r.finish();
      ids.push(r.id);
    }
    const listed = await store.list();
    assert.deepEqual(listed.map((r) => r.id).sort(), [...ids].sort());
    const vertices = listed[0]?.vertices ?? [];
    assert.equal(vertices.length, 500);
    assert.deepEqual(vertices[7], { digest: 'sha256:7', name: 'v7', cached: true, started: 't1', key: 'key7', completed: 't2' });
    // A fourth build is one more than the count: the oldest goes.
    const fourth = await BuildRecorder.start(store);
    await fourth.finish();
    assert.deepEqual((await store.list()).map((r) => r.id).sort(), [ids[1], ids[2], fourth.id].sort());
  });

  it('retention by time removes a build started before the time kept, however few builds there are', async () => {
    const store = new HistoryStore(path.join(dir, 'f'), { keepBuilds: 50, keepDurationMs: 3_600_000 });
    const twoHoursAgo = new Date(Date.now() - 2 * 3_600_000);
    const old = await BuildRecorder.start(store, { id: newBuildId(twoHoursAgo) });
    await old.finish();
    // As it would be had it run then.
    await store.write({ ...(await store.get(old.id)), started: twoHoursAgo.toISOString(), ended: twoHoursAgo.toISOString() });
    const young = await BuildRecorder.start(store);
    await young.finish();
    // Its name says the old one may be past keeping: the records are read, and it goes.
    assert.deepEqual((await store.list()).map((r) => r.id), [young.id]);
    // With only young builds, fewer than kept, nothing goes.
    const next = await BuildRecorder.start(store);
    await next.finish();
    assert.deepEqual(await store.prune(), []);
    assert.deepEqual((await store.list()).map((r) => r.id).sort(), [young.id, next.id].sort());
  });

  it('writes the steps of a record last, and retention reads records written with them first as well', async () => {
    const store = new HistoryStore(path.join(dir, 'g'), { keepBuilds: 50, keepDurationMs: 3_600_000 });
    const recorder = await BuildRecorder.start(store);
    await recorder.finish();
    const text = readFileSync(path.join(store.buildDir(recorder.id), 'record.json'), 'utf8');
    assert.deepEqual(Object.keys(JSON.parse(text) as object).at(-1), 'vertices');
    // As an older kiln wrote them: the end after the steps. One that ended two hours ago goes; one that ended now stays.
    const twoHoursAgo = new Date(Date.now() - 2 * 3_600_000).toISOString();
    const older = async (id: string, ended: string): Promise<void> => {
      await mkdir(path.join(store.buildDir(id), 'logs'), { recursive: true });
      const record = { version: 1, id, owner: '1-1', definition: 'x.json', started: twoHoursAgo, status: 'completed', vertices: [], ended, durationMs: 1 };
      await writeFile(path.join(store.buildDir(id), 'record.json'), `${JSON.stringify(record)}\n`);
    };
    await older('20261202-000000-0001', twoHoursAgo);
    await older('20261202-000000-0002', new Date().toISOString());
    // Steps last, but a head longer than retention reads first: read whole.
    const long = { version: 1, id: '20261202-000000-0003', owner: '1-1', definition: 'x'.repeat(10_000), started: twoHoursAgo, status: 'completed', ended: twoHoursAgo, vertices: [] };
    await mkdir(path.join(store.buildDir(long.id), 'logs'), { recursive: true });
    await writeFile(path.join(store.buildDir(long.id), 'record.json'), `${JSON.stringify(long)}\n`);
    assert.deepEqual((await store.prune({ except: recorder.id })).sort(), ['20261202-000000-0001', long.id]);
    assert.deepEqual((await store.list()).map((r) => r.id).sort(), ['20261202-000000-0002', recorder.id].sort());
  });

  it('follows a log while it is written, and ends when the build ends', async () => {
    const store = new HistoryStore(path.join(dir, 'e'));
    const recorder = await BuildRecorder.start(store);
    recorder.emit(vertex('sha256:bbbb', 'slow', { started: new Date().toISOString() }));
    const log = recorder.open('sha256:bbbb');
    const { out, text } = collect();
    const following = writeLogs(store, recorder.id, out, { follow: true, pollMs: 50 });
    await write(log, 'first line\n');
    // The writer flushes every 250 ms: the follower sees the line while the build runs.
    for (let i = 0; i < 100 && !text().includes('first line'); i++) await sleep(50);
    assert.equal(text(), '==> slow <==\nfirst line\n');
    await write(log, 'second ');
    await write(log, 'line\n');
    log.end('no newline at the end');
    await recorder.finish();
    await following;
    assert.equal(text(), '==> slow <==\nfirst line\nsecond line\nno newline at the end');
  });
});
