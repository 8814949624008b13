import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CacheManager } from '../../../src/cache/types.js';
import { KilnError } from '../../../src/errors.js';
import { createNetworkProvider } from '../../../src/network/provider.js';
import { constraintHolds, WorkerController } from '../../../src/worker/controller.js';
import type { Worker } from '../../../src/worker/types.js';

const cache = { close: async () => {} } as unknown as CacheManager;
const network = createNetworkProvider({ choice: 'none', root: '/nonexistent' });

function worker(id: string, labels: Record<string, string> = {}): Worker {
  return { id, labels, platforms: [{ os: 'linux', architecture: 'amd64', variant: '' }], snapshotter: 'overlayfs', executor: undefined, cache, network };
}

describe('WorkerController', () => {
  it('picks the available worker with the lowest priority number', async () => {
    const c = await WorkerController.start([
      { id: 'b', priority: 5, init: async () => worker('b') },
      { id: 'a', priority: 0, init: async () => { throw new Error('runc not found in PATH'); } },
      { id: 'c', priority: 1, init: async () => worker('c') },
    ]);
    assert.equal((await c.defaultWorker()).id, 'c');
    const statuses = await c.statuses();
    assert.deepEqual(statuses.map((s) => s.id), ['a', 'c', 'b']);
    const a = statuses[0];
    assert.equal(a?.available, false);
    assert.equal(a?.available === false ? a.reason : '', 'runc not found in PATH');
  });

  it('selects by id and by constraints, and explains a refusal', async () => {
    const c = await WorkerController.start([
      { id: 'a', priority: 0, init: async () => worker('a', { tier: 'fast' }) },
      { id: 'b', priority: 1, init: async () => worker('b', { tier: 'slow' }) },
      { id: 'x', priority: 2, init: async () => { throw new Error('no socket'); } },
    ]);
    assert.equal((await c.select({ id: 'b' })).id, 'b');
    assert.equal((await c.select({ constraints: ['labels.tier==slow'] })).id, 'b');
    assert.equal((await c.select({ constraints: ['id!=a'] })).id, 'b');
    await assert.rejects(
      () => c.select({ constraints: ['labels.tier==gpu'] }),
      (err: unknown) =>
        err instanceof KilnError &&
        err.code === 'E_NO_WORKER' &&
        err.message.includes('a: constraint labels.tier==gpu does not hold') &&
        err.message.includes('x: unavailable (no socket)'),
    );
    await assert.rejects(() => c.select({ id: 'x' }), (err: unknown) => err instanceof KilnError && err.message === 'worker "x" is not available: x: unavailable (no socket)');
  });

  it('says when no worker has the id asked for, and which ids there are', async () => {
    const c = WorkerController.create([
      { id: 'runc', priority: 0, init: async () => worker('runc') },
      { id: 'containerd', priority: 1, init: async () => worker('containerd') },
    ]);
    await assert.rejects(
      () => c.select({ id: 'nosuch' }),
      (err: unknown) => err instanceof KilnError && err.code === 'E_NO_WORKER' && err.message === 'no worker has the id "nosuch" (the workers are runc, containerd)',
    );
    await assert.rejects(() => WorkerController.create([]).select({ id: 'runc' }), /no worker has the id "runc" \(the workers are none\)/);
  });

  it('initializes a worker only when a selection needs it, and once', async () => {
    const inits: string[] = [];
    const closed: string[] = [];
    const registration = (id: string, priority: number, fail = false) => ({
      id,
      priority,
      init: async (): Promise<Worker> => {
        inits.push(id);
        if (fail) throw new Error(`${id} is missing`);
        return { ...worker(id), executor: { close: async () => void closed.push(id) } as unknown as Worker['executor'] };
      },
    });
    const c = WorkerController.create([registration('slow', 1), registration('broken', 0, true), registration('spare', 2)]);
    assert.deepEqual(inits, [], 'nothing at registration');
    assert.equal((await c.defaultWorker()).id, 'slow');
    assert.deepEqual(inits, ['broken', 'slow'], 'in priority order, up to the first available');
    assert.equal((await c.select({ id: 'slow' })).id, 'slow');
    assert.equal((await c.select({ id: 'spare' })).id, 'spare');
    assert.deepEqual(inits, ['broken', 'slow', 'spare'], 'each once');
    await c.close();
    assert.deepEqual(closed.sort(), ['slow', 'spare']);

    const byId = WorkerController.create([registration('a', 0), registration('b', 1)]);
    inits.length = 0;
    await byId.select({ id: 'b' });
    assert.deepEqual(inits, ['b'], 'a worker asked for by id is the only one started');
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
