/**
 * Which files a copy with attemptUnpack (Dockerfile ADD) takes for tar
 * archives: the decision alone (unpacking is tested with real owners in
 * test/integration/file-op/unpack-archive.test.ts).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { applyFileAction } from '../../../src/ops/file/apply.js';
import { isTarHeader, tarArchiveCompression } from '../../../src/ops/file/archive.js';
import type { Area } from './fixture.js';
import { copyAction, makeArea, writeTree } from './fixture.js';

describe('copy with attemptUnpack: what is an archive', () => {
  let area: Area;
  beforeEach(async () => {
    area = await makeArea();
  });
  afterEach(async () => area.dispose());

  async function tarOf(name: string, format = 'ustar'): Promise<Buffer> {
    await writeTree(area.base, { 'in/': '', 'in/x': 'x\n' });
    execFileSync('tar', ['-cf', path.join(area.base, name), `--format=${format}`, '-C', path.join(area.base, 'in'), 'x']);
    return fs.readFile(path.join(area.base, name));
  }

  it('a tar (ustar, gnu, v7) and a tar.gz are archives; a gzip of one file, an empty tar and text are not', async () => {
    for (const format of ['ustar', 'gnu', 'v7', 'pax']) {
      const tar = await tarOf(`${format}.tar`, format);
      await fs.writeFile(path.join(area.source, `${format}.tar`), tar);
      assert.equal(await tarArchiveCompression(path.join(area.source, `${format}.tar`)), 'none', format);
    }
    await fs.writeFile(path.join(area.source, 'a.tar.gz'), gzipSync(await tarOf('a.tar')));
    assert.equal(await tarArchiveCompression(path.join(area.source, 'a.tar.gz')), 'gzip');
    await fs.writeFile(path.join(area.source, 'data.gz'), gzipSync('not a tar, only gzip'));
    await fs.writeFile(path.join(area.source, 'empty.tar'), Buffer.alloc(1024));
    await fs.writeFile(path.join(area.source, 'notes.txt'), 'plain\n'.repeat(200));
    for (const name of ['data.gz', 'empty.tar', 'notes.txt']) assert.equal(await tarArchiveCompression(path.join(area.source, name)), undefined, name);
  });

  it('a header with a wrong checksum is not a tar header', async () => {
    const tar = await tarOf('a.tar');
    assert.equal(isTarHeader(tar.subarray(0, 512)), true);
    const broken = Buffer.from(tar.subarray(0, 512));
    broken[0] = (broken[0] as number) ^ 1;
    assert.equal(isTarHeader(broken), false);
  });

  it('copies a file that is not an archive as it is, as buildkitd does', async () => {
    await writeTree(area.source, { 'notes.txt': 'plain\n' });
    await fs.writeFile(path.join(area.source, 'data.gz'), gzipSync('not a tar, only gzip'));
    await applyFileAction(copyAction({ src: '/notes.txt', dest: '/n.txt', attemptUnpack: true }), { target: area.target, source: area.source });
    await applyFileAction(copyAction({ src: '/data.gz', dest: '/data.gz', attemptUnpack: true }), { target: area.target, source: area.source });
    assert.equal(await fs.readFile(path.join(area.target, 'n.txt'), 'utf8'), 'plain\n');
    assert.deepEqual(await fs.readFile(path.join(area.target, 'data.gz')), gzipSync('not a tar, only gzip'));
  });

  it('without attemptUnpack (COPY) an archive is only a file', async () => {
    const tar = await tarOf('a.tar');
    await fs.writeFile(path.join(area.source, 'a.tar'), tar);
    await applyFileAction(copyAction({ src: '/a.tar', dest: '/copied.tar' }), { target: area.target, source: area.source });
    assert.deepEqual(await fs.readFile(path.join(area.target, 'copied.tar')), tar);
  });
});
