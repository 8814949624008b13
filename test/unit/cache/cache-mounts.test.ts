/**
 * Cache mounts through the cache manager on a real root: persistence, the
 * three sharing modes, seeding, du and prune, and the lock across processes
 * (a holder SIGKILLed while holding it must not block anyone).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { createCacheManager } from '../../../src/cache/manager.js';
import type { CacheManager, CacheMountRef } from '../../../src/cache/types.js';

const MANAGER = new URL('../../../src/cache/manager.js', import.meta.url).href;

/** A node process that opens the root, takes cache mount `id` with `sharing`, prints its path, and waits to be killed. */
function holder(root: string, id: string, sharing: string): { process: ChildProcess; path: Promise<string>; exited: Promise<unknown> } {
  const script = `
    import { createCacheManager } from ${JSON.stringify(MANAGER)};
    const [root, id, sharing] = process.argv.slice(1);
    const cm = await createCacheManager({ root });
    const ref = await cm.cacheMount({ id, sharing });
    process.stdout.write(ref.path + '\\n');
    setInterval(() => {}, 1 << 30);
  `;
  const proc = spawn(process.execPath, ['--input-type=module', '-e', script, root, id, sharing], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = once(proc, 'exit');
  const lines = createInterface({ input: proc.stdout as NodeJS.ReadableStream })[Symbol.asyncIterator]();
  const first = lines.next().then((r) => {
    if (r.done === true) throw new Error('the holder exited before taking the cache mount');
    return r.value;
  });
  return { process: proc, path: first, exited };
}

/** Whether `promise` is still pending after `ms`. */
async function pendingAfter(promise: Promise<unknown>, ms: number): Promise<boolean> {
  return Promise.race([promise.then(() => false), sleep(ms).then(() => true)]);
}

describe('cache mounts', () => {
  let root: string;
  let cm: CacheManager;

  beforeEach(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'kiln-cache-mounts-'));
    cm = await createCacheManager({ root });
  });
  afterEach(async () => {
    await cm.close();
    await rm(root, { recursive: true, force: true });
  });

  test('persist across opens of the root; du lists them; prune --all removes them', async () => {
    {
      await using ref = await cm.cacheMount({ id: 'go-build', sharing: 'shared' });
      await writeFile(path.join(ref.path, 'obj'), 'x'.repeat(10_000));
    }
    await cm.close();
    cm = await createCacheManager({ root });
    {
      await using ref = await cm.cacheMount({ id: 'go-build', sharing: 'shared' });
      assert.equal(await readFile(path.join(ref.path, 'obj'), 'utf8'), 'x'.repeat(10_000));
      const listed = (await cm.du()).filter((r) => r.kind === 'cache-mount');
      assert.equal(listed.length, 1);
      assert.equal(listed[0]?.description, 'go-build');
      assert.ok((listed[0]?.size ?? 0) >= 10_000, `size ${listed[0]?.size}`);
      assert.equal(listed[0]?.inUse, true);
      assert.deepEqual((await cm.prune({ all: true })).removed, [], 'not while in use');
    }
    const report = await cm.prune({ all: true });
    assert.deepEqual(report.removed.map((r) => [r.kind, r.description]), [['cache-mount', 'go-build']]);
    assert.ok(report.reclaimedBytes >= 10_000);
    assert.deepEqual((await cm.du()).filter((r) => r.kind === 'cache-mount'), []);
    assert.deepEqual(await readdir(path.join(root, 'cache-mounts')), [], 'no trash left');
    await using fresh = await cm.cacheMount({ id: 'go-build', sharing: 'shared' });
    assert.deepEqual(await readdir(fresh.path), [], 'a pruned cache starts empty');
  });

  test('prune filters apply: keepDuration keeps a cache used recently', async () => {
    await (await cm.cacheMount({ id: 'recent', sharing: 'shared' })).release();
    assert.deepEqual((await cm.prune({ keepDuration: 60_000 })).removed, []);
    assert.equal((await cm.prune({})).removed.length, 1);
  });

  test('shared: concurrent users get the same directory; other ids get others', async () => {
    await using a = await cm.cacheMount({ id: 'npm', sharing: 'shared' });
    await using b = await cm.cacheMount({ id: 'npm', sharing: 'shared' });
    await using other = await cm.cacheMount({ id: 'pip', sharing: 'shared' });
    assert.equal(a.path, b.path);
    assert.notEqual(a.path, other.path);
  });

  test('private: a concurrent user gets its own directory; a later one reuses a free one', async () => {
    const a = await cm.cacheMount({ id: 'p', sharing: 'private' });
    const b = await cm.cacheMount({ id: 'p', sharing: 'private' });
    assert.notEqual(a.path, b.path);
    await writeFile(path.join(b.path, 'mine'), 'b');
    await b.release();
    await using c = await cm.cacheMount({ id: 'p', sharing: 'private' });
    assert.equal(c.path, b.path, 'the free instance is reused, with its content');
    assert.deepEqual(await readdir(c.path), ['mine']);
    await a.release();
  });

  test('locked: a second user waits until the first releases; an abort stops the wait with its reason', async () => {
    const first = await cm.cacheMount({ id: 'apt', sharing: 'locked' });
    const second = cm.cacheMount({ id: 'apt', sharing: 'locked' });
    assert.equal(await pendingAfter(second, 300), true, 'waits while the lock is held');
    await using shared = await cm.cacheMount({ id: 'apt', sharing: 'shared' });
    assert.equal(shared.path, first.path, 'a shared user does not take the lock');
    const controller = new AbortController();
    const third = cm.cacheMount({ id: 'apt', sharing: 'locked', signal: controller.signal });
    controller.abort(new Error('stop waiting'));
    await assert.rejects(third, /stop waiting/);
    await first.release();
    await using got = await second;
    assert.equal(got.path, first.path);
  });

  test('seeding runs once, when the directory is first made', async () => {
    let seeds = 0;
    const seed = async (dir: string): Promise<void> => {
      seeds++;
      await writeFile(path.join(dir, 'seeded'), String(seeds));
    };
    // Both start before either has made the directory: the second waits for the first's seed and uses it.
    const [a, b] = await Promise.all([cm.cacheMount({ id: 's', sharing: 'shared', seed }), cm.cacheMount({ id: 's', sharing: 'shared', seed })]);
    assert.equal(a.path, b.path);
    assert.equal(seeds, 1, 'seeded once');
    assert.equal(await readFile(path.join(a.path, 'seeded'), 'utf8'), '1');
    await a.release();
    await b.release();
    const before = seeds;
    await using again = await cm.cacheMount({ id: 's', sharing: 'shared', seed });
    assert.equal(seeds, before, 'an existing directory is not seeded again');
    const names = await readdir(path.dirname(path.dirname(again.path)));
    assert.deepEqual(names.filter((n) => !n.endsWith('.lock')), ['0'], 'no temporary instance left');
  });

  test('across processes: the lock waits for another process and is broken when it is SIGKILLed', async () => {
    const other = holder(root, 'ccache', 'locked');
    const otherPath = await other.path;
    const waiting = cm.cacheMount({ id: 'ccache', sharing: 'locked' });
    assert.equal(await pendingAfter(waiting, 400), true, 'waits for the other process');
    other.process.kill('SIGKILL');
    await other.exited;
    const ref: CacheMountRef = await waiting;
    assert.equal(ref.path, otherPath);
    await ref.release();
  });

  test('across processes: private instances differ; prune spares what another process uses until it dies', async () => {
    const other = holder(root, 'cargo', 'private');
    const otherPath = await other.path;
    {
      await using mine = await cm.cacheMount({ id: 'cargo', sharing: 'private' });
      assert.notEqual(mine.path, otherPath);
    }
    assert.deepEqual((await cm.prune({ all: true })).removed, [], 'in use by the other process');
    assert.equal((await cm.du()).find((r) => r.kind === 'cache-mount')?.inUse, true);
    other.process.kill('SIGKILL');
    await other.exited;
    assert.deepEqual((await cm.prune({ all: true })).removed.map((r) => r.description), ['cargo']);
  });
});
