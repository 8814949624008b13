/**
 * The cross-process file lock (flock(1) held by a child, started through
 * the resident spawner): exclusive, waited for in turn, given up on abort,
 * and dropped when its holder goes.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { lockFile, tryLockFile } from '../../../src/store/file-lock.js';

describe('file locks', () => {
  let dir: string;
  const never = new AbortController().signal;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'kiln-file-lock-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('is exclusive, and free again once released', async () => {
    const file = path.join(dir, 'a.lock');
    const held = await lockFile(file, never);
    assert.equal(await tryLockFile(file, never), undefined);
    await held.release();
    const again = await tryLockFile(file, never);
    assert.notEqual(again, undefined);
    await again?.release();
  });

  it('is waited for in turn, and a wait ends with its signal', async () => {
    const file = path.join(dir, 'b.lock');
    const first = await lockFile(file, never);
    let secondHeld = false;
    const second = lockFile(file, never).then((lock) => {
      secondHeld = true;
      return lock;
    });
    const abort = new AbortController();
    const third = lockFile(file, abort.signal);
    await sleep(100);
    assert.equal(secondHeld, false);
    abort.abort(new Error('given up'));
    await assert.rejects(third, /given up/);
    await first.release();
    await (await second).release();
    assert.equal(secondHeld, true);
  });
});
