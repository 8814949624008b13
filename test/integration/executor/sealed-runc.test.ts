/**
 * The sealed copy of runc (sealed-runc.ts) against the real runc and perl:
 * it is a memfd this process holds, it runs, and it is gone once closed.
 * A runc that cannot be copied leaves runc to run from its file.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readlinkSync } from 'node:fs';
import { describe, test } from 'node:test';
import { sealRunc } from '../../../src/executor/sealed-runc.js';
import { which } from './contract.js';

describe('sealed runc', () => {
  test('a sealed memfd held by this process, which runs as runc, until it is closed', async (t) => {
    if (process.arch !== 'x64' && process.arch !== 'arm64') return t.skip(`no memfd_create number for ${process.arch}`);
    const runc = await which('runc');
    const sealed = await sealRunc(runc);
    assert.ok(sealed !== undefined, 'made');
    assert.match(sealed.path, new RegExp(`^/proc/${process.pid}/fd/\\d+$`));
    assert.match(readlinkSync(sealed.path), /^\/memfd:runc_cloned:\/proc\/self\/exe \(deleted\)$/);
    assert.equal(execFileSync(sealed.path, ['--version'], { encoding: 'utf8' }), execFileSync(runc, ['--version'], { encoding: 'utf8' }));
    sealed.close();
    assert.equal(existsSync(sealed.path), false, 'closed');
  });

  test('a binary that cannot be read: no copy, and no error', async () => {
    assert.equal(await sealRunc('/nonexistent/runc'), undefined);
  });
});
