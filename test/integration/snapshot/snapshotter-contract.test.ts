/**
 * The snapshotter contract: one suite, run against every implementation,
 * on a real root with real mounts.
 */
import assert from 'node:assert/strict';
import { link, lstat, mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { getAttribute, setAttribute } from 'fs-xattr';
import { KilnError } from '../../../src/errors.js';
import { openSnapshotter, SNAPSHOTTER_NAMES } from '../../../src/snapshot/open-snapshotter.js';
import type { ManagedSnapshotter } from '../../../src/snapshot/stored-snapshotter.js';
import type { Mount, SnapshotKey } from '../../../src/snapshot/types.js';
import { openStore, type Store } from '../../../src/store/store.js';

const k = (s: string): SnapshotKey => s as SnapshotKey;
/** A read-only bind, or an overlay without an upper. */
const readOnly = (m: Mount): boolean => (m.type === 'bind' ? m.readonly : m.type === 'overlay' && m.upper === undefined);

/** Writes `files` (path → content, null = delete) into a new snapshot on `parent`, committed as `name`. */
async function layer(sn: ManagedSnapshotter, name: string, parent: string | undefined, files: Record<string, string | null>): Promise<void> {
  await sn.prepare(k(`${name}-active`), parent === undefined ? undefined : k(parent));
  {
    await using m = await sn.mount(k(`${name}-active`));
    for (const [rel, content] of Object.entries(files)) {
      const p = path.join(m.path, rel);
      if (content === null) {
        await rm(p, { recursive: true });
      } else {
        await mkdir(path.dirname(p), { recursive: true });
        await writeFile(p, content);
      }
    }
  }
  await sn.commit(k(name), k(`${name}-active`));
}

/** Every file below a mounted snapshot, as path → content (directories as `<dir>`). */
async function contentOf(sn: ManagedSnapshotter, key: string): Promise<Record<string, string>> {
  await using m = await sn.mount(k(key));
  const out: Record<string, string> = {};
  async function walk(rel: string): Promise<void> {
    for (const name of (await readdir(path.join(m.path, rel))).sort()) {
      const r = rel === '' ? name : `${rel}/${name}`;
      const st = await lstat(path.join(m.path, r));
      if (st.isDirectory()) {
        out[r] = '<dir>';
        await walk(r);
      } else if (st.isFile()) {
        out[r] = await readFile(path.join(m.path, r), 'utf8');
      } else {
        out[r] = '<special>';
      }
    }
  }
  await walk('');
  return out;
}

for (const name of SNAPSHOTTER_NAMES) {
  describe(`snapshotter contract: ${name}`, () => {
    let root: string;
    let store: Store;
    let sn: ManagedSnapshotter;

    before(async () => {
      root = await mkdtemp(path.join(os.tmpdir(), 'kiln-snap-'));
      store = await openStore(path.join(root, 'store'));
      sn = await openSnapshotter(name, { root, store });
    });
    after(async () => {
      await sn.close();
      await store.close();
      await rm(root, { recursive: true, force: true });
    });

    test('prepare, mount, write, commit', async () => {
      await layer(sn, 'one', undefined, { 'hello.txt': 'hi', 'dir/nested': 'n' });
      const info = await sn.stat(k('one'));
      assert.equal(info?.kind, 'committed');
      assert.deepEqual(info?.parents, []);
      assert.equal(await sn.stat(k('one-active')), undefined);
      assert.deepEqual(await contentOf(sn, 'one'), { dir: '<dir>', 'dir/nested': 'n', 'hello.txt': 'hi' });
      assert.ok((await sn.list()).some((s) => s.key === 'one'));
      await assert.rejects(sn.prepare(k('one')), (e: unknown) => e instanceof KilnError && e.code === 'E_SNAPSHOT');
    });

    test('parent content is visible and the parent is untouched by the child', async () => {
      await layer(sn, 'base', undefined, { keep: 'k', change: 'old', drop: 'd' });
      await layer(sn, 'child', 'base', { change: 'new', drop: null, added: 'a' });
      assert.deepEqual(await contentOf(sn, 'child'), { added: 'a', change: 'new', keep: 'k' });
      assert.deepEqual(await contentOf(sn, 'base'), { change: 'old', drop: 'd', keep: 'k' });
      assert.deepEqual((await sn.stat(k('child')))?.parents, ['base']);
    });

    test('views are read-only presentations of their parent', async () => {
      await sn.view(k('v'), k('base'));
      const info = await sn.stat(k('v'));
      assert.equal(info?.kind, 'active');
      const mounts = await sn.mounts(k('v'));
      const ro = mounts.every(readOnly);
      assert.ok(ro, `view mounts are read-only: ${JSON.stringify(mounts)}`);
      assert.deepEqual(await contentOf(sn, 'v'), { change: 'old', drop: 'd', keep: 'k' });
      await assert.rejects(sn.commit(k('v-done'), k('v')), /only an active, writable snapshot/);
      await sn.remove(k('v'));
    });

    test('a committed snapshot mounts read-only', async () => {
      await layer(sn, 'ro-top', 'base', { extra: 'x' });
      const mounts = await sn.mounts(k('ro-top'));
      assert.ok(mounts.every(readOnly), `committed mounts are read-only: ${JSON.stringify(mounts)}`);
      if (name === 'overlayfs') {
        await using m = await sn.mount(k('ro-top'));
        await assert.rejects(writeFile(path.join(m.path, 'nope'), 'x'), { code: 'EROFS' });
      }
    });

    test('merge layers inputs in order, with deletions of later inputs applied', async () => {
      await layer(sn, 'ma', undefined, { shared: 'A', a: 'a', gone: 'g', 'd/inner': 'i' });
      await layer(sn, 'mb0', undefined, { gone: 'g0', b: 'b' });
      await layer(sn, 'mb', 'mb0', { gone: null, shared: 'B' });
      await sn.merge(k('m-ab'), [k('ma'), k('mb')]);
      assert.deepEqual(await contentOf(sn, 'm-ab'), { a: 'a', b: 'b', d: '<dir>', 'd/inner': 'i', shared: 'B' });
      await sn.merge(k('m-ba'), [k('mb'), k('ma')]);
      assert.deepEqual(await contentOf(sn, 'm-ba'), { a: 'a', b: 'b', d: '<dir>', 'd/inner': 'i', gone: 'g', shared: 'A' });
      assert.deepEqual((await sn.stat(k('m-ab')))?.parents, ['ma', 'mb']);
      // A merge is a parent like any other.
      await layer(sn, 'on-merge', 'm-ab', { top: 't', a: null });
      assert.deepEqual(await contentOf(sn, 'on-merge'), { b: 'b', d: '<dir>', 'd/inner': 'i', shared: 'B', top: 't' });
    });

    test('diff of a snapshot over its base holds only the changes', async () => {
      await layer(sn, 'dl', undefined, { a: 'a', keep: 'k', 'sub/x': 'x' });
      await layer(sn, 'du', 'dl', { a: null, 'sub/y': 'y', n: 'new' });
      await sn.diff(k('d1'), k('dl'), k('du'));
      assert.deepEqual(await contentOf(sn, 'd1'), { n: 'new', sub: '<dir>', 'sub/y': 'y' });
      await sn.diff(k('d-all'), undefined, k('du'));
      assert.deepEqual(await contentOf(sn, 'd-all'), { keep: 'k', n: 'new', sub: '<dir>', 'sub/x': 'x', 'sub/y': 'y' });
      // Applied on the lower again, the diff gives the upper back, deletions included.
      await sn.merge(k('d1-on-dl'), [k('dl'), k('d1')]);
      assert.deepEqual(await contentOf(sn, 'd1-on-dl'), await contentOf(sn, 'du'));
      await sn.diff(k('d-none'), k('du'), k('du'));
      assert.deepEqual(await contentOf(sn, 'd-none'), {});
    });

    test('diff of unrelated snapshots compares their trees', async () => {
      await layer(sn, 'x', undefined, { same: 's', del: 'd', chg: '1', 'dir/keep': 'k', 'gone/f': 'f' });
      await layer(sn, 'y', undefined, { same: 's', chg: '2', add: 'a', 'dir/keep': 'k', 'dir/new': 'n' });
      // Same content and times: unchanged, whatever the inode.
      for (const s of ['x', 'y']) {
        await sn.prepare(k(`${s}-t`), k(s));
        {
          await using m = await sn.mount(k(`${s}-t`));
          for (const f of ['same', 'dir/keep', 'dir']) await utimes(path.join(m.path, f), 1000, 1000);
        }
        await sn.commit(k(`${s}-times`), k(`${s}-t`));
      }
      await sn.diff(k('xy'), k('x-times'), k('y-times'));
      assert.deepEqual(await contentOf(sn, 'xy'), { add: 'a', chg: '2', dir: '<dir>', 'dir/new': 'n' });
      // Its deletions apply when it is layered on the lower.
      await sn.merge(k('xy-on-x'), [k('x-times'), k('xy')]);
      assert.deepEqual(await contentOf(sn, 'xy-on-x'), await contentOf(sn, 'y-times'));
    });

    test('metadata survives prepare, merge and diff', async () => {
      await sn.prepare(k('meta-a'));
      {
        await using m = await sn.mount(k('meta-a'));
        const f = path.join(m.path, 'f');
        await writeFile(f, 'data');
        await link(f, path.join(m.path, 'hard'));
        await execa('chown', ['1234:5678', f]);
        await execa('chmod', ['4750', f]);
        await execa('touch', ['-h', '-d', '2021-02-03 04:05:06.123456789', f]);
        await setAttribute(f, 'user.kiln', 'v');
        await writeFile(path.join(m.path, 'other'), 'o');
      }
      await sn.commit(k('meta'), k('meta-a'));
      await layer(sn, 'meta-up', 'meta', { other: 'changed' });
      await sn.merge(k('meta-m'), [k('ma'), k('meta-up')]);
      // Not a base of meta-m: the diff compares trees.
      await sn.diff(k('meta-d'), k('mb'), k('meta-m'));
      for (const key of ['meta-up', 'meta-m', 'meta-d']) {
        await using m = await sn.mount(k(key));
        const st = await lstat(path.join(m.path, 'f'), { bigint: true });
        assert.equal(st.uid, 1234n, key);
        assert.equal(st.gid, 5678n, key);
        assert.equal(st.mode & 0o7777n, 0o4750n, key);
        assert.equal(st.mtimeNs, 1612325106123456789n, key);
        assert.equal((await getAttribute(path.join(m.path, 'f'), 'user.kiln')).toString(), 'v', key);
        assert.equal((await lstat(path.join(m.path, 'hard'))).ino, Number(st.ino), `${key}: hardlink kept`);
      }
    });

    test('remove refuses a parent in use and a mounted snapshot', async () => {
      await layer(sn, 'p', undefined, { f: '1' });
      await sn.prepare(k('p-child'), k('p'));
      await assert.rejects(sn.remove(k('p')), /snapshot p-child is built on it/);
      {
        await using _m = await sn.mount(k('p-child'));
        await assert.rejects(sn.remove(k('p-child')), /it is mounted/);
        await assert.rejects(sn.commit(k('p-c'), k('p-child')), /it is mounted/);
      }
      await sn.remove(k('p-child'));
      await sn.remove(k('p'));
      assert.equal(await sn.stat(k('p')), undefined);
      await assert.rejects(sn.remove(k('p')), /does not exist/);
    });

    test('mounts are private temporary directories, gone on release', async () => {
      await layer(sn, 'mt', 'base', { more: 'm' });
      const m = await sn.mount(k('mt'));
      assert.equal(await readFile(path.join(m.path, 'keep'), 'utf8'), 'k');
      await m.release();
      await m.release();
      if (name === 'overlayfs') {
        assert.ok(m.path.startsWith(path.join(root, 'mounts')));
        await assert.rejects(lstat(m.path), { code: 'ENOENT' });
        assert.ok(!(await readFile('/proc/self/mountinfo', 'utf8')).includes(m.path));
      }
    });

    test('usage counts the own layer, hardlinks once', async () => {
      await sn.prepare(k('u-a'), k('base'));
      {
        await using m = await sn.mount(k('u-a'));
        await writeFile(path.join(m.path, 'big'), Buffer.alloc(256 * 1024, 1));
        await link(path.join(m.path, 'big'), path.join(m.path, 'big2'));
      }
      await sn.commit(k('u'), k('u-a'));
      const usage = await sn.usage(k('u'));
      assert.ok(usage.size >= 256 * 1024 && usage.size < 2 * 256 * 1024, `size ${usage.size}`);
      assert.ok(usage.inodes >= 1);
    });

    test('sweep keeps roots and their parents, removes the rest', async () => {
      await layer(sn, 'g1', undefined, { f: '1' });
      await layer(sn, 'g2', 'g1', { f: '2' });
      await layer(sn, 'g3', undefined, { f: '3' });
      const keep = new Set((await sn.list()).map((s) => s.key).filter((key) => !key.startsWith('g')));
      const removed = await sn.sweep(() => [...keep, k('g2')]);
      assert.deepEqual([...removed], ['g3']);
      assert.equal((await sn.stat(k('g1')))?.kind, 'committed');
      assert.equal(sn.hasPendingRemovals(), false);
    });

    test("sweep never takes an active snapshot from a running maker, whatever the roots; a dead maker's goes", async () => {
      // What another process's sweep decides when it does not see this
      // process's holds: the record itself says who is building it.
      await sn.prepare(k('busy-active'));
      await sn.prepare(k('orphan-active'));
      const records = store.durable.table<{ owner?: string }>(`snapshots/${name}`);
      const orphan = records.get('orphan-active');
      assert.ok(orphan?.owner !== undefined, 'an active record names its maker');
      // A pid above pid_max: no such process.
      store.durable.write(() => records.put('orphan-active', { ...orphan, owner: '4194305-1' }));
      const removed = await sn.sweep(() => []);
      assert.ok(removed.includes(k('orphan-active')), `removed: ${removed.join(' ')}`);
      assert.equal((await sn.stat(k('busy-active')))?.kind, 'active');
      await sn.commit(k('busy'), k('busy-active'));
      assert.equal(records.get('busy')?.owner, undefined, 'a committed snapshot is kept by holds and results, not by its maker');
      await sn.sweep(() => []);
      assert.equal(await sn.stat(k('busy')), undefined);
    });
  });
}
