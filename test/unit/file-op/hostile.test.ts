/**
 * Hostile trees: symlinks and `..` that aim outside the roots. Whatever each
 * action does (succeed inside the root, or fail), nothing outside the roots
 * may be created, changed, removed or read.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { FileAction } from '../../../src/llb/types.js';
import { applyFileAction } from '../../../src/ops/file/apply.js';
import type { Area } from './fixture.js';
import { action, copyAction, listTree, makeArea, writeTree } from './fixture.js';

let area: Area;
let before: string[];

beforeEach(async () => {
  area = await makeArea();
  await fs.writeFile(path.join(area.outside, 'passwd'), 'evil:x:666:666::/:/bin/sh\n');
  const hostile = (outside: string) => ({
    esc: { link: '../outside' },
    abs: { link: outside },
    hostroot: { link: '/' },
    'deep/up': { link: '../../../../../../../../..' },
    chain: { link: 'esc' },
    loop: { link: 'loop' },
  });
  await writeTree(area.target, hostile(area.outside));
  await writeTree(area.source, {
    ...hostile(area.outside),
    leak: { link: path.join(area.outside, 'secret') },
    'tree/sub/file': 'from source',
  });
  before = await area.outsideState();
});

afterEach(async () => {
  try {
    assert.deepEqual(await area.outsideState(), before, 'something outside the roots changed');
    // Nothing read from outside may have landed in the target.
    for (const line of await listTree(area.target)) assert.ok(!line.includes('not touch') && !line.includes('also not'), line);
  } finally {
    await area.dispose();
  }
});

const run = (a: FileAction) => applyFileAction(a, { target: area.target, source: area.source }).catch(() => undefined);
const escapes = () => ['/esc', '/abs', `/hostroot${area.outside}`, `/deep/up${area.outside}`, '/chain', '/../../outside', '/deep/../../outside'];
const data = new TextEncoder().encode('pwned');

describe('hostile trees: writing', () => {
  it('mkfile never writes outside', async () => {
    for (const p of escapes()) {
      await run(action({ kind: 'mkfile', mkfile: { path: `${p}/pwned`, mode: 0o644, data } }));
      await run(action({ kind: 'mkfile', mkfile: { path: `${p}/secret`, mode: 0o644, data } }));
    }
    await run(action({ kind: 'mkfile', mkfile: { path: '/loop', mode: 0o644, data } }));
  });

  it('mkdir never creates outside', async () => {
    for (const p of escapes()) {
      await run(action({ kind: 'mkdir', mkdir: { path: `${p}/made/deeper`, mode: 0o755, makeParents: true } }));
      await run(action({ kind: 'mkdir', mkdir: { path: `${p}/made`, mode: 0o755, makeParents: false } }));
    }
  });

  it('symlink never creates a link outside', async () => {
    for (const p of escapes()) await run(action({ kind: 'symlink', symlink: { oldpath: '/x', newpath: `${p}/l` } }));
  });

  it('copy never writes outside, whatever the dest', async () => {
    for (const p of escapes()) {
      await run(copyAction({ src: '/tree', dest: `${p}/`, createDestPath: true }));
      await run(copyAction({ src: '/tree/sub/file', dest: `${p}/secret` }));
      await run(copyAction({ src: '/tree', dest: p, dirCopyContents: true }));
    }
  });

  it('copy replaces or refuses a symlink in the target where it needs a directory', async () => {
    await writeTree(area.target, { 'merge/sub': { link: path.join(area.outside, 'dir') } });
    await run(copyAction({ src: '/tree', dest: '/merge', dirCopyContents: true }));
    assert.equal(await fs.readlink(path.join(area.target, 'merge/sub')), path.join(area.outside, 'dir'));
    await applyFileAction(copyAction({ src: '/tree', dest: '/merge', dirCopyContents: true, alwaysReplaceExistingDestPaths: true }), {
      target: area.target,
      source: area.source,
    });
    assert.equal(await fs.readFile(path.join(area.target, 'merge/sub/file'), 'utf8'), 'from source');
  });
});

describe('hostile trees: removing', () => {
  it('rm never removes outside', async () => {
    for (const p of escapes()) {
      for (const sub of ['secret', 'dir', 'dir/file', '*', 'd*/*']) {
        await run(action({ kind: 'rm', rm: { path: `${p}/${sub}`, allowNotFound: true, allowWildcard: true } }));
        await run(action({ kind: 'rm', rm: { path: `${p}/${sub}`, allowNotFound: false, allowWildcard: false } }));
      }
    }
    await run(action({ kind: 'rm', rm: { path: '/*/secret', allowNotFound: false, allowWildcard: true } }));
  });

  it('rm of a link removes the link only', async () => {
    for (const p of ['/esc', '/abs', '/hostroot', '/deep']) {
      await applyFileAction(action({ kind: 'rm', rm: { path: p, allowNotFound: false, allowWildcard: false } }), { target: area.target });
    }
    assert.deepEqual(await listTree(area.target), ['chain -> esc', 'loop -> loop']);
  });
});

describe('hostile trees: reading', () => {
  it('copy never reads outside through a source link', async () => {
    for (const p of escapes()) {
      await run(copyAction({ src: `${p}/secret`, dest: '/got', followSymlink: true }));
      await run(copyAction({ src: `${p}/*`, dest: '/got/', allowWildcard: true, followSymlink: true }));
      await run(copyAction({ src: p, dest: '/got2', followSymlink: true }));
    }
    await run(copyAction({ src: '/leak', dest: '/got3', followSymlink: true }));
    await run(copyAction({ src: '/*/*', dest: '/got4/', allowWildcard: true, followSymlink: true }));
  });

  it('copies source links as links, never as their targets', async () => {
    await applyFileAction(copyAction({ src: '/', dest: '/all', dirCopyContents: true }), { target: area.target, source: area.source });
    assert.equal(await fs.readlink(path.join(area.target, 'all/leak')), path.join(area.outside, 'secret'));
  });

  it('owner names never come from outside', async () => {
    await fs.rm(path.join(area.target, 'abs'));
    await writeTree(area.target, { etc: { link: area.outside } });
    await assert.rejects(
      applyFileAction(action({ kind: 'mkdir', mkdir: { path: '/x', mode: 0o755, makeParents: false, owner: { user: 'evil' } } }), { target: area.target }),
      /unknown user "evil"/,
    );
  });
});
