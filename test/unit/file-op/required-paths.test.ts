/**
 * A copy's required paths (BuildKit's `required_paths`, which dockerfile2llb
 * writes for `COPY --parents SRC/PATTERN` when the pattern has no wildcard):
 * the copy runs when they are in the source and fails naming the first one
 * that is not.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { ERROR_CODES } from '../../../src/errors.js';
import { applyFileAction } from '../../../src/ops/file/apply.js';
import type { Area } from './fixture.js';
import { copyAction, makeArea, rejectsWith, writeTree } from './fixture.js';

describe('copy with requiredPaths', () => {
  let area: Area;
  beforeEach(async () => {
    area = await makeArea();
    await writeTree(area.source, { 'src/': '', 'src/a/': '', 'src/a/x': 'x\n', 'src/b': 'b\n' });
  });
  afterEach(async () => area.dispose());

  const parents = (required: string[]) =>
    copyAction({ src: '/src', dest: '/out/', dirCopyContents: true, createDestPath: true, includePatterns: ['a'], requiredPaths: required });

  it('runs when every required path is in the source', async () => {
    await applyFileAction(parents(['/src/a']), { target: area.target, source: area.source });
    assert.equal(await fs.readFile(path.join(area.target, 'out', 'a', 'x'), 'utf8'), 'x\n');
    await assert.rejects(fs.lstat(path.join(area.target, 'out', 'b')), 'only what the pattern includes');
  });

  it('fails naming the required path that is missing', async () => {
    await rejectsWith(applyFileAction(parents(['/src/a', '/src/nope']), { target: area.target, source: area.source }), ERROR_CODES.PATH_NOT_FOUND, 'the required path "/src/nope" is not in the source', area);
  });
});
