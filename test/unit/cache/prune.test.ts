/** prune's decisions (pure functions over a view of the cache) on deep chains of snapshots. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { selectPrunable, usageRecords, withParents, type CacheView, type RootRecord } from '../../../src/cache/prune.js';
import type { SnapshotInfo, SnapshotKey } from '../../../src/snapshot/types.js';

/** A chain of `depth` snapshots, each on the one before, each the result of one op; the top is the least recently used. */
function chainView(depth: number): CacheView {
  const snapshots = new Map<SnapshotKey, SnapshotInfo>();
  const roots = new Map<string, RootRecord>();
  const sizes = new Map<SnapshotKey, number>();
  for (let i = 0; i < depth; i++) {
    const key = `s${i}` as SnapshotKey;
    snapshots.set(key, { key, kind: 'committed', parents: i === 0 ? [] : [`s${i - 1}` as SnapshotKey], createdAt: i });
    roots.set(`k${i}`, { kind: 'result', refs: [key], description: `op ${i}`, createdAt: i, lastUsedAt: depth - i });
    sizes.set(key, 1);
  }
  return { snapshots, roots, inUse: new Set(), sizes, descriptions: new Map(), cacheMounts: new Map() };
}

describe('prune on a 20,000-deep chain', () => {
  const depth = 20_000;

  it('finds every parent without recursing', () => {
    const view = chainView(depth);
    assert.equal(withParents(view.snapshots, [`s${depth - 1}` as SnapshotKey]).size, depth);
    assert.equal(usageRecords(view).length, depth);
  });

  // A walk of the chain per candidate removal took minutes here.
  it('with keepStorage, removes the fewest least recently used results that fit', { timeout: 60_000 }, () => {
    const view = chainView(depth);
    // Each removal of the current top frees one snapshot; half must go.
    const chosen = selectPrunable(view, { keepStorage: depth / 2 }, 0);
    assert.equal(chosen.results.length, depth / 2);
    assert.deepEqual(chosen.results.slice(0, 3), [`k${depth - 1}`, `k${depth - 2}`, `k${depth - 3}`]);
    assert.equal(chosen.results.at(-1), `k${depth / 2}`);
    // The top (least recently used) result holds the whole chain: nothing fits until it goes.
    assert.equal(selectPrunable(view, { keepStorage: depth - 1 }, 0).results.length, 1);
    assert.equal(selectPrunable(view, { keepStorage: depth }, 0).results.length, 0);
  });
});

describe('prune with keepKeys (results a kept build record names)', () => {
  it('never selects them, whatever the filters', () => {
    const view = chainView(4);
    const keepKeys = new Set(['k1', 'k3']);
    assert.deepEqual(selectPrunable(view, { keepKeys }, 0).results.toSorted(), ['k0', 'k2']);
    assert.deepEqual(selectPrunable(view, { all: true, keepKeys }, 0).results.toSorted(), ['k0', 'k2']);
    assert.deepEqual(selectPrunable(view, { keepStorage: 0, keepKeys }, 0).results.toSorted(), ['k0', 'k2']);
  });
});
