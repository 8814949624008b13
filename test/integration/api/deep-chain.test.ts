/**
 * A chain of real file ops far deeper than the overlay stack limit: it
 * builds, its cached rebuild runs nothing, and prune removes all of it.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type ProgressEvent, Session, solve } from '../../../src/index.js';
import { rawFileChain } from '../../support/file-chain.js';

/** Deeper than the ~230 layers one overlay mount takes here: the stack is flattened on the way (bench/deep-graph goes to 10,000). */
const DEPTH = 300;

describe(`a chain of ${DEPTH} file ops`, () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-deep-'));
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  it('builds, is answered from the cache next time, and is pruned to nothing', async () => {
    const root = join(dir, 'root');
    const definition = rawFileChain(DEPTH);
    {
      await using session = await Session.open({ root, snapshotter: 'overlayfs' });
      await using result = await solve(session, definition);
      assert.ok(result.ref !== null);
      // Flattening kept the stack mountable, and the tree holds every op's file.
      assert.ok((await result.ref.layers()).length < 250);
      await using mounted = await result.mount();
      assert.equal((await readdir(mounted.path)).length, DEPTH);
      assert.equal(await readFile(join(mounted.path, 'f0'), 'utf8'), '0');
      assert.equal(await readFile(join(mounted.path, `f${DEPTH - 1}`), 'utf8'), String(DEPTH - 1));
    }
    {
      const events: ProgressEvent[] = [];
      await using session = await Session.open({ root, snapshotter: 'overlayfs' });
      await using result = await solve(session, definition, { progress: { emit: (e) => events.push(e) } });
      assert.ok(result.ref !== null);
      const vertices = events.filter((e) => e.type === 'vertex');
      assert.equal(vertices.length, DEPTH, 'every op is reported once');
      assert.ok(vertices.every((e) => e.cached), 'nothing runs');
    }
    await using session = await Session.open({ root, snapshotter: 'overlayfs' });
    const report = await session.prune({ all: true });
    assert.equal(report.removed.filter((r) => r.kind === 'result').length, DEPTH);
    // Only kiln's own records and folders are left.
    assert.deepEqual((await session.du()).map((r) => r.kind), ['store']);
    const left = await readdir(join(root, 'snapshots/overlayfs'));
    assert.deepEqual(left, ['empty']);
  });
});
