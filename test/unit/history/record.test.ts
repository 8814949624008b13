/** The rules of a build record: merging vertex events, counting, status of a dead owner, retention by age and count. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type BuildRecord, buildIdTime, expiredRecords, isBuildIdText, mergeVertex, newBuildId, newestFirst, shownStatus, vertexCounts } from '../../../src/history/record.js';
import { historyRetention } from '../../../src/client/session.js';
import { DEFAULT_CONFIG, parseConfig } from '../../../src/client/config.js';
import { ERROR_CODES, KilnError } from '../../../src/errors.js';

const HOUR = 3_600_000;
const NOW = Date.parse('2026-12-02T12:00:00Z');

function record(id: string, endedHoursAgo: number, extra: Partial<BuildRecord> = {}): BuildRecord {
  const ended = new Date(NOW - endedHoursAgo * HOUR).toISOString();
  return { version: 1, id, owner: 'dead-owner', definition: 'x.json', started: ended, ended, status: 'completed', vertices: [], ...extra };
}
const dead = (): boolean => false;
const alive = (): boolean => true;

describe('build records', () => {
  it('ids sort as builds started and have only safe characters', () => {
    const a = newBuildId(new Date('2026-12-02T11:35:01Z'));
    const b = newBuildId(new Date('2026-12-02T11:35:02Z'));
    assert.match(a, /^20261202-113501-[0-9a-f]{4}$/);
    assert.ok(a < b);
    assert.ok(isBuildIdText(a));
    assert.ok(!isBuildIdText('../x'));
    assert.ok(!isBuildIdText(''));
  });

  it('an id made from a time gives that time back, to the second; other ids give none', () => {
    assert.equal(buildIdTime(newBuildId(new Date('2026-12-02T11:35:01.750Z'))), Date.parse('2026-12-02T11:35:01Z'));
    assert.equal(buildIdTime('nightly-build'), undefined);
    assert.equal(buildIdTime('20261202-113501'), undefined);
    assert.equal(buildIdTime('20261202-113501-zzzz'), undefined);
  });

  it('merges vertex events by digest; the first completion is the outcome', () => {
    let vs = mergeVertex([], { type: 'vertex', digest: 'sha256:a', name: 'a', inputs: [], cached: false, started: 't1' });
    vs = mergeVertex(vs, { type: 'vertex', digest: 'sha256:b', name: 'b', inputs: [], cached: true, started: 't1', completed: 't2' });
    vs = mergeVertex(vs, { type: 'vertex', digest: 'sha256:a', name: 'a', inputs: [], cached: false, completed: 't3', error: 'exit 3' });
    vs = mergeVertex(vs, { type: 'vertex', digest: 'sha256:a', name: 'a', inputs: [], cached: false, completed: 't4', error: 'cancelled' });
    assert.deepEqual(vs, [
      { digest: 'sha256:a', name: 'a', cached: false, started: 't1', completed: 't3', error: 'exit 3' },
      { digest: 'sha256:b', name: 'b', cached: true, started: 't1', completed: 't2' },
    ]);
  });

  it('counts run, cached and failed as the progress summary does (started and never completed: none)', () => {
    const r = record('r', 0, {
      vertices: [
        { digest: '1', name: 'ran', cached: false, started: 't', completed: 't' },
        { digest: '2', name: 'hit', cached: true, started: 't', completed: 't' },
        { digest: '3', name: 'broke', cached: false, started: 't', completed: 't', error: 'x' },
        { digest: '4', name: 'keyed', cached: false, started: 't' },
      ],
    });
    assert.deepEqual(vertexCounts(r), { run: 1, cached: 1, failed: 1 });
  });

  it('a running record whose process is gone is shown interrupted', () => {
    const r = record('r', 0, { status: 'running' });
    assert.equal(shownStatus(r, alive), 'running');
    assert.equal(shownStatus(r, dead), 'interrupted');
    assert.equal(shownStatus(record('f', 0, { status: 'failed' }), dead), 'failed');
  });

  it('sorts newest first', () => {
    const sorted = [record('old', 5), record('new', 1), record('mid', 3)].sort(newestFirst).map((r) => r.id);
    assert.deepEqual(sorted, ['new', 'mid', 'old']);
  });
});

describe('retention', () => {
  const policy = { keepBuilds: 3, keepDurationMs: 48 * HOUR };

  it('keeps the newest N builds and drops the rest', () => {
    const records = [1, 2, 3, 4, 5].map((h) => record(`b${h}`, h));
    assert.deepEqual(expiredRecords(records, policy, NOW, { alive: dead }).map((r) => r.id), ['b4', 'b5']);
  });

  it('drops builds that ended longer ago than the duration, even under the count', () => {
    const records = [record('recent', 1), record('old', 49)];
    assert.deepEqual(expiredRecords(records, policy, NOW, { alive: dead }).map((r) => r.id), ['old']);
  });

  it('never drops a running build, and a running build does not count against the others', () => {
    const records = [record('live', 100, { status: 'running' }), ...[1, 2, 3].map((h) => record(`b${h}`, h))];
    assert.deepEqual(expiredRecords(records, policy, NOW, { alive }), []);
  });

  it('an interrupted build (its process died) goes like any other', () => {
    const records = [record('gone', 100, { status: 'running' })];
    assert.deepEqual(expiredRecords(records, policy, NOW, { alive: dead }).map((r) => r.id), ['gone']);
  });

  it('the build that just ended is kept and counts as one of the N', () => {
    const records = [record('b1', 1), record('b2', 2), record('b3', 3)];
    assert.deepEqual(expiredRecords(records, { keepBuilds: 2, keepDurationMs: 0 }, NOW, { keep: 'b1', alive: dead }).map((r) => r.id), ['b2', 'b3']);
  });

  it('all: keeps nothing finished', () => {
    const records = [record('a', 0), record('b', 0)];
    assert.deepEqual(expiredRecords(records, { keepBuilds: 0, keepDurationMs: 0 }, NOW, { alive: dead }).length, 2);
  });
});

describe('history retention settings', () => {
  it('defaults to 48 hours and 50 builds', () => {
    assert.deepEqual(historyRetention({}, DEFAULT_CONFIG, {}), { keepDurationMs: 48 * HOUR, keepBuilds: 50 });
  });

  it('takes the flag, then the environment, then kiln.toml', () => {
    const config = parseConfig('[history]\nkeep-duration = "7d"\nkeep-builds = 10\n', '/c/kiln.toml');
    assert.deepEqual(historyRetention({}, config, {}), { keepDurationMs: 7 * 24 * HOUR, keepBuilds: 10 });
    assert.deepEqual(historyRetention({}, config, { KILN_HISTORY_KEEP_BUILDS: '0', KILN_HISTORY_KEEP_DURATION: '1h' }), { keepDurationMs: HOUR, keepBuilds: 0 });
    assert.deepEqual(historyRetention({ keepBuilds: 2 }, config, { KILN_HISTORY_KEEP_BUILDS: '0' }), { keepDurationMs: 7 * 24 * HOUR, keepBuilds: 2 });
  });

  it('refuses a bad value in the environment or kiln.toml, naming it', () => {
    assert.throws(() => historyRetention({}, DEFAULT_CONFIG, { KILN_HISTORY_KEEP_BUILDS: 'many' }), (err: unknown) => err instanceof KilnError && err.code === ERROR_CODES.USAGE && /KILN_HISTORY_KEEP_BUILDS "many"/.test(err.message));
    assert.throws(() => parseConfig('[history]\nkeep-duration = "soon"\n', '/c/kiln.toml'), /history\.keep-duration: expected a duration/);
    assert.throws(() => parseConfig('[history]\nkeep-builds = -1\n', '/c/kiln.toml'), /history\.keep-builds: expected a whole number/);
    assert.throws(() => parseConfig('[history]\nkeep = 1\n', '/c/kiln.toml'), /unknown key \(\[history\] takes keep-duration, keep-builds\)/);
  });
});

describe('buildIdTime', () => {
  it('reads the start time, to the second, of an id newBuildId made', () => {
    const started = new Date(Date.UTC(2026, 11, 2, 11, 35, 1, 750));
    assert.equal(buildIdTime(newBuildId(started)), Date.UTC(2026, 11, 2, 11, 35, 1));
  });

  it('reads nothing of another name', () => {
    for (const name of ['20261302-113501-3f9a', '20261202-113501-3f9', '20261202-113501-3f9a-x', 'my-build', '20261202-246001-0000']) assert.equal(buildIdTime(name), undefined, name);
  });
});
