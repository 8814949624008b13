/** What only the overlayfs snapshotter promises: cheap snapshots, deep stacks, the probe. */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openSnapshotter } from '../../../src/snapshot/open-snapshotter.js';
import { overlaySupported } from '../../../src/snapshot/overlay-probe.js';
import type { ManagedSnapshotter } from '../../../src/snapshot/stored-snapshotter.js';
import type { SnapshotKey } from '../../../src/snapshot/types.js';
import { openStore, type Store } from '../../../src/store/store.js';

const k = (s: string): SnapshotKey => s as SnapshotKey;

describe('overlayfs snapshotter', () => {
  let root: string;
  let store: Store;
  let sn: ManagedSnapshotter;

  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'kiln-overlay-'));
    store = await openStore(path.join(root, 'store'));
    sn = await openSnapshotter('overlayfs', { root, store });
  });
  after(async () => {
    await sn.close();
    await store.close();
    await rm(root, { recursive: true, force: true });
  });

  test('the probe finds overlayfs usable here and leaves nothing behind', async () => {
    assert.equal(await overlaySupported(path.join(root, 'tmp')), true);
    assert.deepEqual(await readdir(path.join(root, 'tmp')), []);
  });

  test('prepare and commit copy nothing of the parent', async () => {
    await sn.prepare(k('big-a'));
    {
      await using m = await sn.mount(k('big-a'));
      await writeFile(path.join(m.path, 'blob'), Buffer.alloc(8 << 20, 7));
    }
    await sn.commit(k('big'), k('big-a'));
    const started = performance.now();
    await sn.prepare(k('child-a'), k('big'));
    await sn.commit(k('child'), k('child-a'));
    const elapsed = performance.now() - started;
    assert.ok((await sn.usage(k('child'))).size < 64 * 1024, 'the child layer holds no copy');
    assert.ok(elapsed < 50, `prepare+commit took ${elapsed} ms`);
    const mounts = await sn.mounts(k('child'));
    assert.equal(mounts[0]?.type, 'overlay');
  });

  test('stacks too deep for one mount are flattened and still read right', async () => {
    const parents: SnapshotKey[] = [];
    for (let i = 0; i < 250; i++) {
      await sn.prepare(k(`l${i}-a`));
      {
        await using m = await sn.mount(k(`l${i}-a`));
        await writeFile(path.join(m.path, `f${i}`), String(i));
        await writeFile(path.join(m.path, 'top'), String(i));
      }
      await sn.commit(k(`l${i}`), k(`l${i}-a`));
      parents.push(k(`l${i}`));
    }
    await sn.merge(k('deep'), parents);
    await sn.prepare(k('deep-child'), k('deep'));
    await using m = await sn.mount(k('deep-child'));
    const names = await readdir(m.path);
    assert.equal(names.length, 251);
    assert.equal(await readFile(path.join(m.path, 'top'), 'utf8'), '249');
    assert.equal(await readFile(path.join(m.path, 'f0'), 'utf8'), '0');
    const [mount] = await sn.mounts(k('deep-child'));
    assert.ok(mount?.type === 'overlay' && mount.upper !== undefined);
    assert.ok(mount.lower.length < 250, 'the stack was flattened');
  });
});
