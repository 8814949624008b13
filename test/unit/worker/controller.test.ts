import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CacheManager } from '../../../src/cache/types.js';
import { KilnError } from '../../../src/errors.js';
import { constraintHolds, WorkerController } from '../../../src/worker/controller.js';
import type { Worker } from '../../../src/worker/types.js';

const cache = { close: async () => {} } as unknown as CacheManager;

function worker(id: string, labels: Record<string, string> = {}): Worker {
  return { id, labels, platforms: [{ os: 'linux', architecture: 'amd64', variant: '' }], snapshotter: 'overlayfs', executor: undefined, cache };
}

describe('WorkerController', () => {
  it('picks the available worker with the lowest priority number', async () => {
    const c = await WorkerController.start([
      { id: 'b', priority: 5, init: async () => worker('b') },
      { id: 'a', priority: 0, init: async () => { throw new Error('runc not found in PATH'); } },
      { id: 'c', priority: 1, init: async () => worker('c') },
    ]);
    assert.equal(c.defaultWorker().id, 'c');
    assert.deepEqual(c.statuses.map((s) => s.id), ['a', 'c', 'b']);
    const a = c.statuses[0];
    assert.equal(a?.available, false);
    assert.equal(a?.available === false ? a.reason : '', 'runc not found in PATH');
  });

  it('selects by id and by constraints, and explains a refusal', async () => {
    const c = await WorkerController.start([
      { id: 'a', priority: 0, init: async () => worker('a', { tier: 'fast' }) },
      { id: 'b', priority: 1, init: async () => worker('b', { tier: 'slow' }) },
      { id: 'x', priority: 2, init: async () => { throw new Error('no socket'); } },
    ]);
    assert.equal(c.select({ id: 'b' }).id, 'b');
    assert.equal(c.select({ constraints: ['labels.tier==slow'] }).id, 'b');
    assert.equal(c.select({ constraints: ['id!=a'] }).id, 'b');
    assert.throws(
      () => c.select({ constraints: ['labels.tier==gpu'] }),
      (err: unknown) =>
        err instanceof KilnError &&
        err.code === 'E_NO_WORKER' &&
        err.message.includes('a: constraint labels.tier==gpu does not hold') &&
        err.message.includes('x: unavailable (no socket)'),
    );
    assert.throws(() => c.select({ id: 'x' }), /worker "x" is not available/);
  });

  it('evaluates every constraint field', () => {
    const w = worker('w1', { zone: 'eu' });
    assert.ok(constraintHolds(w, 'id==w1'));
    assert.ok(constraintHolds(w, 'executor==none'));
    assert.ok(constraintHolds(w, 'snapshotter==overlayfs'));
    assert.ok(constraintHolds(w, 'platform==linux/amd64'));
    assert.ok(constraintHolds(w, 'labels.zone==eu'));
    assert.ok(constraintHolds(w, 'labels.missing!=x'));
    assert.ok(!constraintHolds(w, 'labels.zone!=eu'));
  });
});
