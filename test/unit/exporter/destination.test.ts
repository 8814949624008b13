import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { checkOutputDestination, UnsafeOutputError } from '../../../src/exporter/destination.js';
import { tempDir } from '../../support/tree-fixture.js';

describe('checkOutputDestination', () => {
  let work: string;
  let root: string;
  let context: string;
  const protect = () => ({ root, locals: new Map([['context', context]]) });
  before(async () => {
    work = await tempDir();
    root = path.join(work, 'state', 'kiln-root');
    context = path.join(work, 'src', 'context');
    await fs.mkdir(root, { recursive: true });
    await fs.mkdir(context, { recursive: true });
    await fs.symlink(root, path.join(work, 'root-link'));
  });
  after(() => fs.rm(work, { recursive: true, force: true }));

  const refused = async (dest: string, kind: 'directory' | 'file', pattern: RegExp): Promise<void> => {
    await assert.rejects(checkOutputDestination({ kind, dest }, protect()), (err: unknown) => err instanceof UnsafeOutputError && pattern.test(err.message));
  };

  it("refuses kiln's root, a path inside it, a parent of it, and a symlink to it", async () => {
    await refused(root, 'directory', /is kiln's root/);
    await refused(path.join(root, 'snapshots', 'new'), 'directory', /is inside kiln's root/);
    await refused(path.join(work, 'state'), 'directory', /contains kiln's root/);
    await refused(path.join(work, 'root-link'), 'directory', /is kiln's root/);
    await refused(path.join(root, 'content', 'x.tar'), 'file', /inside kiln's root/);
  });

  it('refuses a local source directory and its parents, and the filesystem root', async () => {
    await refused(context, 'directory', /is the directory of local source "context"/);
    await refused(path.join(work, 'src'), 'directory', /contains the directory of local source "context"/);
    await refused('/', 'directory', /filesystem root/);
  });

  it('accepts a directory inside a local source, a new directory, and a file outside the root', async () => {
    await checkOutputDestination({ kind: 'directory', dest: path.join(context, 'out') }, protect());
    await checkOutputDestination({ kind: 'directory', dest: path.join(work, 'new', 'deeper') }, protect());
    await checkOutputDestination({ kind: 'file', dest: path.join(context, 'image.tar') }, protect());
  });
});
