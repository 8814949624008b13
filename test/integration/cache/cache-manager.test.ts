/**
 * The cache manager on a real root: persistence, refs, merge/diff, du/prune.
 * What involves other processes (leases, crashes, races) is in
 * cross-process.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { createCacheManager } from '../../../src/cache/manager.js';
import type { CacheManager, ImmutableRef, ResultRef } from '../../../src/cache/types.js';
import type { CacheKey } from '../../../src/digest.js';

const key = (s: string): CacheKey => `sha256:${s.padStart(64, '0')}` as CacheKey;
const d = (description: string): { description: string } => ({ description });

/** A committed ref holding `files` on top of `parent`. */
async function build(cm: CacheManager, parent: ResultRef, files: Record<string, string | Buffer>): Promise<ImmutableRef> {
  const mutable = await cm.newMutable(parent, d(`write ${Object.keys(files).join(',')}`));
  {
    await using m = await mutable.mount();
    for (const [rel, content] of Object.entries(files)) await writeFile(path.join(m.path, rel), content);
  }
  return mutable.commit();
}

async function read(ref: ResultRef, rel: string): Promise<string> {
  assert.ok(ref !== null);
  await using m = await ref.mount();
  // Awaited here, before the mount is released.
  return await readFile(path.join(m.path, rel), 'utf8');
}

async function releaseAll(refs: readonly ResultRef[] | undefined): Promise<void> {
  for (const ref of refs ?? []) await ref?.release();
}

describe('cache manager', () => {
  let root: string;
  let cm: CacheManager;

  beforeEach(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'kiln-cache-'));
    cm = await createCacheManager({ root });
  });
  afterEach(async () => {
    await cm.close();
    await rm(root, { recursive: true, force: true });
  });

  test('results persist across opens of the same root', async () => {
    assert.equal(cm.snapshotter, 'overlayfs');
    const ref = await build(cm, null, { f: 'hello' });
    await cm.save(key('a'), [ref, null], d('make f'));
    await ref.release();
    await cm.close();

    cm = await createCacheManager({ root });
    const found = await cm.lookup(key('a'));
    assert.equal(found?.length, 2);
    assert.equal(found?.[1], null);
    assert.equal(await read(found?.[0] ?? null, 'f'), 'hello');
    await releaseAll(found);
    assert.equal(await cm.lookup(key('missing')), undefined);
  });

  test('save replaces the record of a key; the replaced snapshot is garbage once released', async () => {
    const first = await build(cm, null, { f: 'first' });
    const second = await build(cm, null, { f: 'second' });
    await cm.save(key('k'), [first], d('one'));
    await cm.save(key('k'), [second], d('two'));
    const found = await cm.lookup(key('k'));
    assert.equal(found?.[0]?.id, second.id);
    await releaseAll([first, second, ...(found ?? [])]);
    const report = await cm.prune({ keepDuration: 60_000 });
    assert.deepEqual(report.removed.map((r) => r.id), [first.id]);
  });

  test('refs are counted: a record stays until every handle is released', async () => {
    const ref = await build(cm, null, { f: 'x' });
    await cm.save(key('r'), [ref], d('r'));
    await ref.release();
    await ref.release(); // a second release is a no-op
    const a = (await cm.lookup(key('r')))?.[0] ?? null;
    const b = (await cm.lookup(key('r')))?.[0] ?? null;
    assert.ok(a !== null && b !== null);
    const c = a.clone();
    await a.release();
    await b.release();
    assert.deepEqual((await cm.prune({ all: true })).removed, []);
    assert.equal(await read(c, 'f'), 'x');
    await c.release();
    await assert.rejects(c.mount(), /used after/);
    const report = await cm.prune({ all: true });
    assert.deepEqual(report.removed.map((r) => r.id), [c.id]);
    assert.ok(report.reclaimedBytes > 0);
    assert.equal(await cm.lookup(key('r')), undefined);
  });

  test('a released mutable ref leaves nothing; closing releases what is still held', async () => {
    const mutable = await cm.newMutable(null, d('scratch work'));
    await mutable.release();
    await assert.rejects(mutable.commit(), /used after/);
    assert.deepEqual(await cm.du(), []);

    const ref = await build(cm, null, { f: 'x' });
    await cm.save(key('held'), [ref], d('held'));
    const held = await cm.lookup(key('held'));
    assert.equal(held?.length, 1);
    await cm.close(); // releases `ref` and `held`
    cm = await createCacheManager({ root });
    assert.equal((await cm.prune({ all: true })).removed.length, 1);
  });

  test('merge and diff', async () => {
    const a = await build(cm, null, { a: 'a', shared: 'a' });
    const b = await build(cm, null, { b: 'b', shared: 'b' });
    assert.equal(await cm.merge([null, null], d('nothing')), null);
    const same = await cm.merge([null, a, null], d('one input'));
    assert.equal(same?.id, a.id);
    const ab = await cm.merge([a, b], d('merge'));
    assert.equal(await read(ab, 'shared'), 'b');
    assert.equal(await read(ab, 'a'), 'a');

    const a2 = await build(cm, a, { more: 'm' });
    const delta = await cm.diff(a, a2, d('diff'));
    await assert.rejects(read(delta, 'a'), { code: 'ENOENT' });
    assert.equal(await read(delta, 'more'), 'm');
    assert.equal(await cm.diff(a, a, d('no change')), null);
    assert.equal(await cm.diff(a, null, d('to scratch')), null);
    const whole = await cm.diff(null, a2, d('whole'));
    assert.equal(whole?.id, a2.id);
    await releaseAll([a, b, same, ab, a2, delta, whole]);
  });

  test('du describes every snapshot; prune filters by age and storage', async () => {
    const old = await build(cm, null, { big: Buffer.alloc(512 * 1024, 1) });
    await cm.save(key('old'), [old], d('old and big'));
    const recent = await build(cm, null, { small: 's' });
    await cm.save(key('recent'), [recent], d('recent and small'));
    await releaseAll([old, recent]);

    const du = await cm.du();
    const big = du.find((r) => r.id === old.id);
    assert.equal(big?.description, 'write big');
    assert.equal(big?.kind, 'result');
    assert.equal(big?.inUse, false);
    assert.equal(big?.shared, false);
    assert.ok((big?.size ?? 0) >= 512 * 1024);

    await sleep(200);
    await cm.lookup(key('recent')).then(releaseAll); // used just now
    assert.deepEqual((await cm.prune({ keepDuration: 60_000 })).removed, []);
    const aged = await cm.prune({ keepDuration: 100 });
    assert.deepEqual(aged.removed.map((r) => r.id), [old.id]);
    assert.ok(aged.reclaimedBytes >= 512 * 1024);

    const again = await build(cm, null, { big: Buffer.alloc(512 * 1024, 2) });
    await cm.save(key('again'), [again], d('big again'));
    await again.release();
    await cm.lookup(key('recent')).then(releaseAll);
    // Storage: the least recently used goes first, until what remains fits.
    assert.deepEqual((await cm.prune({ keepStorage: 1024 * 1024 })).removed, []);
    const tight = await cm.prune({ keepStorage: 100 * 1024 });
    assert.deepEqual(tight.removed.map((r) => r.id), [again.id]);
    assert.ok(await cm.lookup(key('recent')).then(releaseAll).then(() => true));
  });

  test('prune keeps records shared with refs in use unless told all', async () => {
    const base = await build(cm, null, { base: 'b' });
    await cm.save(key('base'), [base], d('base'));
    const child = await build(cm, base, { child: 'c' });
    await cm.save(key('child'), [child], d('child'));
    await base.release();
    // `child` is still held: in use, and base is its parent.
    const du = await cm.du();
    assert.equal(du.find((r) => r.id === child.id)?.inUse, true);
    assert.deepEqual((await cm.prune({})).removed, []);
    assert.ok(await cm.lookup(key('base')).then(releaseAll).then(() => true));

    const all = await cm.prune({ all: true });
    // The record of base goes, but its snapshot stays under the child in use.
    assert.deepEqual(all.removed, []);
    assert.equal(await cm.lookup(key('base')), undefined);
    assert.equal((await cm.du()).find((r) => r.id === base.id)?.shared, true);
    assert.equal(await read(child, 'base'), 'b');
    await child.release();
    const rest = await cm.prune({ all: true });
    assert.deepEqual(rest.removed.map((r) => r.id).sort(), [base.id, child.id].sort());
  });

  // Speed is measured in bench/, not asserted here; this checks many records resolve correctly.
  test('1,000 records saved against one ref all resolve to it', async () => {
    const base = await build(cm, null, { base: 'b' });
    const ref = await build(cm, base, { f: 'x' });
    for (let i = 0; i < 1000; i++) await cm.save(key(`many${i}`), [ref], d(`op ${i}`));
    await releaseAll([base, ref]);
    const found: ResultRef[] = [];
    for (let i = 0; i < 1000; i++) found.push(...((await cm.lookup(key(`many${i}`))) ?? []));
    assert.equal(found.length, 1000);
    assert.equal(await read(found[999] ?? null, 'f'), 'x'); // an overlay of two layers
    await releaseAll(found);
  });
});
