/**
 * The cache manager shared between processes: leases across processes,
 * processes killed at any point, concurrent saves. Children are real `node`
 * processes running a small script against the same root.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { createCacheManager } from '../../../src/cache/manager.js';
import type { CacheManager, ImmutableRef, ResultRef } from '../../../src/cache/types.js';
import type { CacheKey } from '../../../src/digest.js';
import { openSnapshotter, SNAPSHOTTER_NAMES, type SnapshotterName } from '../../../src/snapshot/open-snapshotter.js';
import { openStore } from '../../../src/store/store.js';

const MANAGER = new URL('../../../src/cache/manager.js', import.meta.url).href;
const key = (s: string): CacheKey => `sha256:${s.padStart(64, '0')}` as CacheKey;

/** What every child script starts with: `root`, `args`, `say(line)`, `forever()`. */
const PRELUDE = `
import { createCacheManager } from ${JSON.stringify(MANAGER)};
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
const [root, ...args] = process.argv.slice(1);
const say = (line) => process.stdout.write(line + '\\n');
const forever = () => new Promise(() => setInterval(() => {}, 1 << 30));
const key = (s) => 'sha256:' + s.padStart(64, '0');
`;

interface Child {
  readonly process: ChildProcess;
  /** The next line the child prints (rejects if it exits first). */
  line(): Promise<string>;
  /** Resolves with the exit code (or signal) once it has exited. */
  exited: Promise<number | string | null>;
  stderr(): string;
}

function child(root: string, body: string, args: readonly string[] = []): Child {
  const proc = spawn(process.execPath, ['--input-type=module', '-e', PRELUDE + body, root, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = once(proc, 'exit').then(([code, signal]) => (code ?? signal) as number | string | null);
  const lines = createInterface({ input: proc.stdout as NodeJS.ReadableStream })[Symbol.asyncIterator]();
  return {
    process: proc,
    async line() {
      const next = await lines.next();
      if (next.done === true) throw new Error(`child exited before printing a line; stderr: ${stderr}`);
      return next.value;
    },
    exited,
    stderr: () => stderr,
  };
}

async function kill(c: Child): Promise<void> {
  c.process.kill('SIGKILL');
  await c.exited;
}

async function read(ref: ResultRef, rel: string): Promise<string> {
  assert.ok(ref !== null);
  await using m = await ref.mount();
  return await readFile(path.join(m.path, rel), 'utf8');
}

async function build(cm: CacheManager, parent: ResultRef, files: Record<string, string>): Promise<ImmutableRef> {
  const mutable = await cm.newMutable(parent, { description: 'test' });
  {
    await using m = await mutable.mount();
    for (const [rel, content] of Object.entries(files)) await writeFile(path.join(m.path, rel), content);
  }
  return mutable.commit();
}

/** Checks, with the manager closed, that no active snapshot is left and every snapshot folder has a record. */
async function assertTidy(root: string, name: SnapshotterName): Promise<void> {
  const store = await openStore(path.join(root, 'store'));
  const sn = await openSnapshotter(name, { root, store });
  try {
    const list = await sn.list();
    assert.deepEqual(list.filter((s) => s.kind === 'active').map((s) => s.key), [], 'no active snapshot is left');
    const folders = (await readdir(path.join(root, 'snapshots', name))).filter((f) => f !== 'empty');
    assert.equal(folders.length, list.length, 'one folder per snapshot record');
    assert.deepEqual(await readdir(path.join(root, 'mounts')), [], 'no mountpoint is left');
    assert.equal(sn.hasPendingRemovals(), false);
  } finally {
    await sn.close();
    await store.close();
  }
}

describe('cache manager across processes', () => {
  let root: string;

  beforeEach(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'kiln-xproc-'));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  test('a ref held by another process prevents prune until that process dies', async () => {
    const cm = await createCacheManager({ root });
    try {
      const ref = await build(cm, null, { f: 'shared' });
      await cm.save(key('x'), [ref], { description: 'x' });
      await ref.release();
      const holder = child(root, `
        const cm = await createCacheManager({ root });
        const refs = await cm.lookup(key('x'));
        say(refs === undefined ? 'missing' : 'held');
        await forever();
      `);
      assert.equal(await holder.line(), 'held', holder.stderr());
      assert.deepEqual((await cm.prune({ all: true })).removed, []);
      const still = await cm.lookup(key('x'));
      assert.equal(await read(still?.[0] ?? null, 'f'), 'shared');
      await still?.[0]?.release();
      await kill(holder);
      assert.deepEqual((await cm.prune({ all: true })).removed.map((r) => r.id), [ref.id]);
      assert.equal(await cm.lookup(key('x')), undefined);
    } finally {
      await cm.close();
    }
  });

  for (const name of SNAPSHOTTER_NAMES) {
    test(`${name}: a process killed with a snapshot mounted leaves the root clean for the next open`, async () => {
      let cm = await createCacheManager({ root, snapshotter: name });
      const base = await build(cm, null, { base: 'b' });
      await cm.save(key('base'), [base], { description: 'base' });
      await cm.close();

      const victim = child(root, `
        const cm = await createCacheManager({ root, snapshotter: args[0] });
        const [base] = await cm.lookup(key('base'));
        const work = await cm.newMutable(base, { description: 'doomed' });
        const m = await work.mount();
        await writeFile(path.join(m.path, 'new'), 'n');
        say(m.path);
        await forever();
      `, [name]);
      const mountpoint = await victim.line();
      if (name === 'overlayfs') {
        assert.ok(mountpoint.startsWith(path.join(root, 'mounts')));
        assert.ok((await readFile('/proc/self/mountinfo', 'utf8')).includes(mountpoint));
      }
      await kill(victim);

      cm = await createCacheManager({ root, snapshotter: name });
      try {
        assert.ok(!(await readFile('/proc/self/mountinfo', 'utf8')).includes(root), 'no stale mount under the root');
        const found = await cm.lookup(key('base'));
        assert.equal(await read(found?.[0] ?? null, 'base'), 'b');
        await found?.[0]?.release();
        assert.equal((await cm.du()).length, 1);
      } finally {
        await cm.close();
      }
      await assertTidy(root, name);
    });
  }

  test('processes killed at random points leave every saved result whole', async () => {
    for (let run = 0; run < 4; run++) {
      const worker = child(root, `
        const cm = await createCacheManager({ root });
        let prev = null;
        for (let i = 0; ; i++) {
          const work = await cm.newMutable(prev, { description: 'step ' + i });
          const m = await work.mount();
          await writeFile(path.join(m.path, 'n'), String(i));
          await writeFile(path.join(m.path, 'f' + i), 'x');
          await m.release();
          const ref = await work.commit();
          const merged = i % 4 === 3 ? await cm.merge([prev, ref], { description: 'merge' }) : null;
          await cm.save(key(args[0] + '-' + i), [ref, merged], { description: 'step ' + i });
          say(String(i));
          await merged?.release();
          await prev?.release();
          prev = ref;
          if (i % 5 === 4) await cm.prune({ keepDuration: 1000 });
        }
      `, [String(run)]);
      let saved = Number(await worker.line());
      const until = performance.now() + 50 + Math.random() * 250;
      while (performance.now() < until) saved = Number(await worker.line());
      await kill(worker);

      const cm = await createCacheManager({ root });
      try {
        for (let i = 0; i <= saved; i++) {
          const found = await cm.lookup(key(`${run}-${i}`));
          assert.ok(found !== undefined, `result ${run}-${i} was saved before the kill`);
          assert.equal(await read(found[0] ?? null, 'n'), String(i));
          assert.equal(await read(found[0] ?? null, `f${i}`), 'x');
          if (found[1] !== null) assert.equal(await read(found[1] ?? null, 'n'), String(i));
          for (const ref of found) await ref?.release();
        }
      } finally {
        await cm.close();
      }
      await assertTidy(root, 'overlayfs');
    }
  });

  test('two processes saving the same key: one record wins, the other snapshot is garbage', async () => {
    const racer = `
      const cm = await createCacheManager({ root });
      const work = await cm.newMutable(null, { description: args[0] });
      const m = await work.mount();
      await writeFile(path.join(m.path, 'who'), args[0]);
      await m.release();
      const ref = await work.commit();
      await cm.save(key('race'), [ref], { description: args[0] });
      await ref.release();
      await cm.close();
      say('saved');
    `;
    const racers = [child(root, racer, ['A']), child(root, racer, ['B'])];
    for (const r of racers) assert.equal(await r.exited, 0, r.stderr());
    const cm = await createCacheManager({ root });
    try {
      const found = await cm.lookup(key('race'));
      const winner = found?.[0] ?? null;
      assert.ok(['A', 'B'].includes(await read(winner, 'who')));
      assert.equal((await cm.du()).length, 2);
      const report = await cm.prune({ keepDuration: 60_000 });
      assert.equal(report.removed.length, 1);
      assert.notEqual(report.removed[0]?.id, winner?.id);
      assert.equal((await cm.du()).length, 1);
      await winner?.release();
    } finally {
      await cm.close();
    }
  });
});
