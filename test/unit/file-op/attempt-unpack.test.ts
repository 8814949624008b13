import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { ERROR_CODES } from '../../../src/errors.js';
import { applyFileAction } from '../../../src/ops/file/apply.js';
import { mayBeArchive } from '../../../src/ops/file/archive.js';
import type { Area } from './fixture.js';
import { copyAction, makeArea, rejectsWith, writeTree } from './fixture.js';

describe('copy with attemptUnpack (Dockerfile ADD of a local file)', () => {
  let area: Area;
  beforeEach(async () => {
    area = await makeArea();
  });
  afterEach(async () => area.dispose());

  async function tarOf(name: string): Promise<Buffer> {
    await writeTree(area.base, { 'in/': '', 'in/x': 'x\n' });
    execFileSync('tar', ['-cf', path.join(area.base, name), '-C', path.join(area.base, 'in'), 'x']);
    return fs.readFile(path.join(area.base, name));
  }

  it('copies a file that is not an archive as it is, as buildkitd does', async () => {
    await writeTree(area.source, { 'notes.txt': 'plain\n', 'data.gz': '' });
    await fs.writeFile(path.join(area.source, 'data.gz'), gzipSync('not a tar, only gzip'));
    await applyFileAction(copyAction({ src: '/notes.txt', dest: '/n.txt', attemptUnpack: true }), { target: area.target, source: area.source });
    await applyFileAction(copyAction({ src: '/data.gz', dest: '/data.gz', attemptUnpack: true }), { target: area.target, source: area.source });
    assert.equal(await fs.readFile(path.join(area.target, 'n.txt'), 'utf8'), 'plain\n');
    assert.ok((await fs.stat(path.join(area.target, 'data.gz'))).size > 0);
  });

  it('refuses a tar or a tar.gz by name rather than copying the archive whole', async () => {
    const tar = await tarOf('a.tar');
    await fs.writeFile(path.join(area.source, 'a.tar'), tar);
    await fs.writeFile(path.join(area.source, 'a.tar.gz'), gzipSync(tar));
    for (const src of ['/a.tar', '/a.tar.gz']) {
      assert.equal(await mayBeArchive(path.join(area.source, src)), true, src);
      await rejectsWith(
        applyFileAction(copyAction({ src, dest: '/', attemptUnpack: true }), { target: area.target, source: area.source }),
        ERROR_CODES.FILE_ACTION,
        'kiln does not unpack archives yet',
        area,
      );
    }
    // Without attemptUnpack (COPY) an archive is only a file.
    await applyFileAction(copyAction({ src: '/a.tar', dest: '/copied.tar' }), { target: area.target, source: area.source });
    assert.deepEqual(await fs.readFile(path.join(area.target, 'copied.tar')), tar);
  });
});
