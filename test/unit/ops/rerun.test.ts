/**
 * "Why did this rerun?" as logic: the field and file diffs, the explainer
 * over an in-memory history table (first build, no-cache, changed fields,
 * inputs, files, a moved source, a pruned result), and the reason's text.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CacheKey } from '../../../src/digest.js';
import { definitionToPb, parseAnyDefinition } from '../../../src/llb/formats.js';
import type { RawDefinition } from '../../../src/llb/json-types.js';
import { loadDefinition } from '../../../src/llb/load.js';
import type { Definition, Op } from '../../../src/llb/types.js';
import { fieldChanges, fileChanges, rememberedForm, shownValue } from '../../../src/ops/rerun-diff.js';
import { RerunHistory, type RerunKey, type RerunRecord, rerunExplainer } from '../../../src/ops/rerun-history.js';
import type { NoCache } from '../../../src/ops/graph.js';
import { formatReason } from '../../../src/progress/reason.js';
import { createRerunCollector } from '../../../src/progress/rerun-report.js';
import type { RerunReason } from '../../../src/progress/types.js';
import type { Vertex } from '../../../src/solver/types.js';
import type { LocalFileSignature } from '../../../src/source/local/checksum.js';
import type { KvTable } from '../../../src/store/store.js';

/** An in-memory table, with the writes counted. */
function memoryTable<V>(rows: Map<string, V>): KvTable<V> {
  return {
    get: (key) => rows.get(key),
    put: (key, value) => void rows.set(key, structuredClone(value)),
    remove: (key) => void rows.delete(key),
    entries: () => [...rows].sort(([a], [b]) => (a < b ? -1 : 1)),
  };
}

function memoryHistory() {
  const rows = new Map<string, RerunRecord>();
  const keys = new Map<string, RerunKey>();
  let transactions = 0;
  const history = new RerunHistory({
    records: memoryTable(rows),
    keys: memoryTable(keys),
    transaction: (fn) => {
      transactions++;
      return fn();
    },
  });
  return { rows, keys, history, transactions: () => transactions };
}

const exec = (args: readonly string[], env: readonly string[] = [], extra: Record<string, unknown> = {}) => ({
  inputs: ['base'],
  exec: { meta: { args, env }, mounts: [{ dest: '/', input: 0, output: 0 }], ...extra },
});

const def = (ops: Record<string, unknown>, result = 'step'): Definition =>
  loadDefinition({ version: 1, ops: { base: { source: { identifier: 'docker-image://busybox:latest' } }, ...ops }, result });

/**
 * One build of `definition` through the explainer: every op keyed by `keys`
 * (by name; default a key from the op's digest), each asked for a reason
 * (as if none was cached) and remembered; returns the reasons by op name.
 */
function build(
  history: RerunHistory,
  definition: Definition,
  options: { keys?: Record<string, string>; noCache?: NoCache; files?: Record<string, LocalFileSignature> } = {},
): Map<string, RerunReason | undefined> {
  const explain = rerunExplainer({
    definition,
    history,
    ...(options.noCache === undefined ? {} : { noCache: options.noCache }),
    files: (op: Op) => options.files?.[op.name],
  });
  const keyOf = (op: Op): CacheKey => (options.keys?.[op.name] ?? `key-${op.digest}`) as CacheKey;
  const reasons = new Map<string, RerunReason | undefined>();
  for (const op of definition.ops.values()) {
    const vertex = { digest: op.digest, name: op.name } as unknown as Vertex<never>;
    const inputKeys = op.inputs.map((input) => keyOf(definition.ops.get(input.op) as Op));
    reasons.set(op.name, explain.reason(vertex, keyOf(op), inputKeys));
    explain.remember(vertex, keyOf(op), inputKeys);
  }
  explain.flush();
  return reasons;
}

describe('rerun diff', () => {
  it('names each changed leaf by its path, with old and new values as JSON', () => {
    const before = { meta: { args: ['sh', '-c', 'make'], env: ['A=1'] }, network: 'sandbox' };
    const after = { meta: { args: ['sh', '-c', 'make -j4'], env: ['A=1', 'B=2'] }, network: 'none', security: 'insecure' };
    assert.deepEqual(fieldChanges(before, after), [
      { path: 'meta.args[2]', old: '"make"', new: '"make -j4"' },
      { path: 'meta.env[1]', new: '"B=2"' },
      { path: 'network', old: '"sandbox"', new: '"none"' },
      { path: 'security', new: '"insecure"' },
    ]);
    assert.deepEqual(fieldChanges({ attrs: { 'local.followpaths': 'a' } }, { attrs: {} }), [{ path: 'attrs["local.followpaths"]', old: '"a"' }]);
    assert.deepEqual(fieldChanges({ a: [1, { b: 2 }] }, { a: [1, { b: 2 }] }), []);
    assert.deepEqual(fieldChanges({ a: 1 }, { a: [1] }), [{ path: 'a', old: '1', new: '[1]' }]);
  });

  it('aligns lists of different lengths: one element added or removed in the middle is one change', () => {
    assert.deepEqual(fieldChanges({ env: ['A=1', 'C=3'] }, { env: ['A=1', 'B=2', 'C=3'] }), [{ path: 'env[1]', new: '"B=2"' }]);
    assert.deepEqual(fieldChanges(['sh', '-x', '-c', 'make'], ['sh', '-c', 'make']), [{ path: '[1]', old: '"-x"' }]);
    assert.deepEqual(fieldChanges(['a', 'b', 'c'], ['a', 'B', 'c', 'd']), [
      { path: '[1]', old: '"b"', new: '"B"' },
      { path: '[3]', new: '"d"' },
    ]);
    assert.deepEqual(fieldChanges([{ dest: '/' }, { dest: '/out' }], [{ dest: '/' }, { dest: '/cache', type: 'cache' }, { dest: '/out' }]), [
      { path: '[1]', new: '{"dest":"/cache","type":"cache"}' },
    ]);
  });

  it('cuts long values inside their quotes, and objects with ...', () => {
    assert.equal(shownValue('x'.repeat(100)), JSON.stringify(`${'x'.repeat(57)}...`));
    assert.equal(shownValue({ long: 'y'.repeat(100) }).length, 60);
    assert.ok(shownValue({ long: 'y'.repeat(100) }).endsWith('...'));
  });

  it('remembers plain JSON with URL credentials masked, bigints as strings', () => {
    const form = rememberedForm({ id: 'git+https://user:hunter2@example.com/r.git', env: ['X=https://tok@host/'], t: 12n, gone: undefined });
    assert.deepEqual(form, { env: ['X=https://***@host/'], id: 'git+https://***@example.com/r.git', t: '12' });
    assert.ok(!JSON.stringify(form).includes('hunter2'));
  });

  it('lists added, removed and modified paths, the first 10, with the total', () => {
    const before: LocalFileSignature = [['a', '1'], ['b', '1'], ['c', '1']];
    const after: LocalFileSignature = [['a', '2'], ['c', '1'], ['d', '1']];
    assert.deepEqual(fileChanges(before, after), {
      changes: [
        { path: 'a', change: 'modified' },
        { path: 'd', change: 'added' },
        { path: 'b', change: 'removed' },
      ],
      total: 3,
    });
    const many: LocalFileSignature = Array.from({ length: 25 }, (_, i) => [`f${String(i).padStart(2, '0')}`, '1'] as const);
    const changed = fileChanges([], many);
    assert.equal(changed.changes.length, 10);
    assert.equal(changed.total, 25);
    assert.deepEqual(fileChanges(null, many), { changes: [] });
  });

  it('finds the same changes in string lists, in place and after the paths part ways', () => {
    const list = (pairs: readonly (readonly [string, string])[]): string => pairs.map(([p, s]) => `${p}\0${s}\0`).join('');
    const before = list([['a', '1'], ['b', '1'], ['c', '1'], ['e', '1']]);
    // b modified where both lists still pair up; then d added, e modified and c removed after they part ways.
    const after = list([['a', '1'], ['b', '2'], ['d', '1'], ['e', '2']]);
    assert.deepEqual(fileChanges(before, after), {
      changes: [
        { path: 'b', change: 'modified' },
        { path: 'd', change: 'added' },
        { path: 'e', change: 'modified' },
        { path: 'c', change: 'removed' },
      ],
      total: 4,
    });
    assert.deepEqual(fileChanges(before, before), { changes: [], total: 0 });
  });
});

describe('rerun explainer', () => {
  it('the first build of each op says so; the same build again needs no write', () => {
    const h = memoryHistory();
    const d = def({ step: exec(['sh', '-c', 'make']) });
    const first = build(h.history, d);
    assert.deepEqual([...first.values()], [{ kind: 'first-build' }, { kind: 'first-build' }]);
    assert.equal(h.transactions(), 1);
    build(h.history, d);
    assert.equal(h.transactions(), 1, 'nothing moved: nothing written');
    assert.deepEqual([...h.keys.keys()].sort(), ['base', 'step'], 'each record has its key in the key table');
  });

  it('records written before the key table get their keys on the next build, then cost no decode', () => {
    const h = memoryHistory();
    const d = def({ step: exec(['sh', '-c', 'make']) });
    build(h.history, d);
    h.keys.clear();
    // What an older kiln left: records, no keys. The same build: nothing to explain, the keys are filled in.
    const again = build(h.history, d);
    assert.deepEqual([...again.values()], [{ kind: 'result-gone' }, { kind: 'result-gone' }]);
    assert.equal(h.transactions(), 2);
    assert.deepEqual([...h.keys.keys()].sort(), ['base', 'step']);
    build(h.history, d);
    assert.equal(h.transactions(), 2, 'then nothing is written');
    // A changed step still says what changed, from its record.
    const changed = build(h.history, def({ step: exec(['sh', '-c', 'make -j4']) }));
    assert.equal(changed.get('step')?.kind, 'changed');
    assert.equal(h.keys.get('step')?.key, h.rows.get('step')?.key);
  });

  it('a changed arg and env are named with old → new, relative to the body', () => {
    const h = memoryHistory();
    build(h.history, def({ step: exec(['sh', '-c', 'make'], ['A=1']) }));
    const reasons = build(h.history, def({ step: exec(['sh', '-c', 'make -j4'], ['A=2']) }));
    const reason = reasons.get('step');
    assert.deepEqual(reason, {
      kind: 'changed',
      fields: [
        { path: 'meta.args[2]', old: '"make"', new: '"make -j4"' },
        { path: 'meta.env[0]', old: '"A=1"', new: '"A=2"' },
      ],
      inputs: [],
    });
    assert.equal(formatReason(reason as RerunReason), 'meta.args[2] changed "make" → "make -j4"; meta.env[0] changed "A=1" → "A=2"');
  });

  it('an input whose key moved is named; the op itself did not change', () => {
    const h = memoryHistory();
    const d = def({ step: exec(['make']) });
    build(h.history, d, { keys: { base: 'k1', step: 's1' } });
    const reasons = build(h.history, d, { keys: { base: 'k2', step: 's2' } });
    assert.deepEqual(reasons.get('base'), { kind: 'changed', fields: [], inputs: [], other: 'source-content' });
    assert.deepEqual(reasons.get('step'), { kind: 'changed', fields: [], inputs: ['base'] });
    assert.equal(formatReason(reasons.get('step') as RerunReason), 'input "base" changed');
    assert.equal(formatReason(reasons.get('base') as RerunReason), "the source's content changed");
  });

  it('a local source names its changed files', () => {
    const h = memoryHistory();
    const d = loadDefinition({ version: 1, ops: { ctx: { source: { identifier: 'local://ctx' } } }, result: 'ctx' });
    build(h.history, d, { keys: { ctx: 'k1' }, files: { ctx: [['a.txt', 's1'], ['b.txt', 's1']] } });
    const reasons = build(h.history, d, { keys: { ctx: 'k2' }, files: { ctx: [['a.txt', 's2'], ['b.txt', 's1'], ['c.txt', 's1']] } });
    const reason = reasons.get('ctx') as RerunReason;
    assert.deepEqual(reason, { kind: 'changed', fields: [], inputs: [], files: { changes: [{ path: 'a.txt', change: 'modified' }, { path: 'c.txt', change: 'added' }], total: 2 } });
    assert.equal(formatReason(reason), 'local files changed: modified a.txt, added c.txt');
    const tooMany = build(h.history, d, { keys: { ctx: 'k3' }, files: { ctx: null } }).get('ctx') as RerunReason;
    assert.equal(formatReason(tooMany), 'local files changed (too many files to list)');
  });

  it('--no-cache, --no-cache-filter and ignoreCache are said before anything else', () => {
    const h = memoryHistory();
    const d = def({ step: { ...exec(['make']), metadata: { ignoreCache: true } } });
    assert.deepEqual(build(h.history, d).get('step'), { kind: 'no-cache', by: 'ignoreCache' });
    const all = build(h.history, def({ step: exec(['make']) }), { noCache: true });
    assert.deepEqual([...all.values()], [{ kind: 'no-cache', by: '--no-cache' }, { kind: 'no-cache', by: '--no-cache' }]);
    const filtered = build(h.history, def({ step: exec(['make']) }), { noCache: ['base'] });
    assert.deepEqual(filtered.get('step'), { kind: 'no-cache', by: '--no-cache-filter' });
    assert.equal(formatReason({ kind: 'no-cache', by: '--no-cache' }), '--no-cache asked for a rerun');
  });

  it('a pb.Definition is compared by its ops\' custom names', () => {
    const h = memoryHistory();
    const raw = (args: readonly string[]): RawDefinition =>
      ({
        version: 1,
        ops: {
          base: { source: { identifier: 'docker-image://busybox:latest' }, metadata: { description: { 'llb.customname': 'base image' } } },
          step: { ...exec(args), metadata: { description: { 'llb.customname': 'compile' } } },
        },
        result: 'step',
      }) as unknown as RawDefinition;
    const first = parseAnyDefinition(definitionToPb(raw(['make'])));
    assert.ok(first.ops.has('compile'), [...first.ops.keys()].join(', '));
    build(h.history, first);
    const reasons = build(h.history, parseAnyDefinition(definitionToPb(raw(['make', '-j4']))));
    assert.deepEqual(reasons.get('compile'), { kind: 'changed', fields: [{ path: 'meta.args[1]', new: '"-j4"' }], inputs: [] });
  });

  it('the same key as the earlier build means its result is gone', () => {
    const h = memoryHistory();
    const d = def({ step: exec(['make']) });
    build(h.history, d);
    assert.deepEqual(build(h.history, d).get('step'), { kind: 'result-gone' });
  });

  it('a change only in a masked value is said without showing it; the password is never stored', () => {
    const h = memoryHistory();
    build(h.history, def({ step: exec(['make'], ['U=https://u:pw-one-xyz@h/']) }), { keys: { step: 'k1' } });
    const reason = build(h.history, def({ step: exec(['make'], ['U=https://u:pw-two-xyz@h/']) }), { keys: { step: 'k2' } }).get('step');
    assert.deepEqual(reason, { kind: 'changed', fields: [], inputs: [], other: 'hidden-value' });
    assert.ok(!JSON.stringify([...h.rows]).includes('pw-'));
  });

  it('secretEnv and secret mounts are remembered by id only', () => {
    const h = memoryHistory();
    build(h.history, def({ step: exec(['make'], [], { secretEnv: [{ id: 'tok', name: 'TOKEN' }] }) }));
    const reason = build(h.history, def({ step: exec(['make'], [], { secretEnv: [{ id: 'tok2', name: 'TOKEN' }] }) })).get('step');
    assert.deepEqual((reason as { fields: unknown }).fields, [{ path: 'secretEnv[0].id', old: '"tok"', new: '"tok2"' }]);
  });

  it('more than five fields: five listed and the rest counted', () => {
    const h = memoryHistory();
    build(h.history, def({ step: exec(['a', 'b', 'c', 'd', 'e', 'f', 'g']) }));
    const reason = build(h.history, def({ step: exec(['1', '2', '3', '4', '5', '6', '7']) })).get('step') as RerunReason & { kind: 'changed' };
    assert.equal(reason.fields.length, 5);
    assert.equal(reason.moreFields, 2);
    assert.match(formatReason(reason), /; 2 more field\(s\) changed$/);
  });

  it('prune drops every record, or those unused for --keep-duration', () => {
    const h = memoryHistory();
    build(h.history, def({ step: exec(['make']) }));
    assert.equal(h.history.prune({ keepDuration: 60_000 }, Date.now()), 0);
    assert.equal(h.history.prune({}, Date.now()), 2);
    assert.equal(h.rows.size, 0);
    assert.equal(h.keys.size, 0, 'the keys go with their records');
  });
});

describe('rerun report', () => {
  it('lists the steps that reran with their reasons, never a cached one', () => {
    const collector = createRerunCollector();
    const T = '2024-05-01T10:00:00.000Z';
    collector.emit({ type: 'vertex', digest: 'a', name: 'make', inputs: [], started: T, cached: false, reason: { kind: 'first-build' } });
    collector.emit({ type: 'vertex', digest: 'a', name: 'make', inputs: [], started: T, completed: T, cached: false, reason: { kind: 'first-build' } });
    collector.emit({ type: 'vertex', digest: 'b', name: 'base', inputs: [], started: T, completed: T, cached: true });
    assert.deepEqual(collector.lines(), ['Why steps reran (1):', '  [make] no earlier build of this op']);
    assert.deepEqual(createRerunCollector().lines(), ['Why steps reran: nothing reran; every step came from the cache.']);
  });
});
