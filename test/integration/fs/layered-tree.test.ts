import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setAttribute } from 'fs-xattr';
import { treeOfMounts } from '../../../src/ops/exec/mounts.js';
import { LayeredTree } from '../../../src/fs/layered-tree.js';
import { resolveInRoot } from '../../../src/fs/safe-path.js';

/**
 * The oracle is overlayfs itself: the same layers are mounted, and every
 * path must be found (or not) with the same content through LayeredTree as
 * through the mount.
 */
describe('LayeredTree', () => {
  let base: string;
  let merged: string;
  const layer = (name: string): string => path.join(base, name);
  /** Top-most first, as overlayfs's lowerdir lists them. */
  const LAYERS = ['top', 'middle', 'bottom'];

  const write = async (at: string, content: string): Promise<void> => {
    await fs.mkdir(path.dirname(at), { recursive: true });
    await fs.writeFile(at, content);
  };
  const whiteout = async (at: string): Promise<void> => {
    await fs.mkdir(path.dirname(at), { recursive: true });
    execFileSync('mknod', [at, 'c', '0', '0']);
  };

  before(async () => {
    base = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-layered-'));
    merged = path.join(base, 'merged');
    await fs.mkdir(merged);
    for (const name of LAYERS) await fs.mkdir(layer(name));
    // bottom: a base system.
    await write(path.join(layer('bottom'), 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\n');
    await write(path.join(layer('bottom'), 'etc/group'), 'root:x:0:\n');
    await write(path.join(layer('bottom'), 'etc/hostname'), 'bottom');
    await write(path.join(layer('bottom'), 'opaque/old'), 'hidden by an opaque dir');
    await write(path.join(layer('bottom'), 'gone/file'), 'hidden by a whiteout');
    await write(path.join(layer('bottom'), 'was-dir/file'), 'hidden by a file');
    await write(path.join(layer('bottom'), 'real/target'), 'through a symlink');
    await fs.mkdir(path.join(layer('bottom'), 'proc'));
    // middle: changes, some undone above.
    await write(path.join(layer('middle'), 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\nbuilder:x:1000:1000::/home:/bin/sh\n');
    await whiteout(path.join(layer('middle'), 'etc/hostname'));
    await whiteout(path.join(layer('middle'), 'gone'));
    await write(path.join(layer('middle'), 'opaque/new'), 'in the opaque dir');
    await setAttribute(path.join(layer('middle'), 'opaque'), 'trusted.overlay.opaque', 'y');
    await write(path.join(layer('middle'), 'was-dir'), 'now a file');
    await fs.symlink('/real', path.join(layer('middle'), 'link'));
    await fs.mkdir(path.join(layer('middle'), 'real'));
    await fs.symlink('../etc/passwd', path.join(layer('middle'), 'real/rel-link'));
    // top: a file brought back, a new one under a merged dir.
    await write(path.join(layer('top'), 'etc/hostname'), 'top');
    await write(path.join(layer('top'), 'etc/hosts'), '127.0.0.1 localhost\n');
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${LAYERS.map(layer).join(':')}`, merged]);
  });
  after(async () => {
    execFileSync('umount', [merged]);
    await fs.rm(base, { recursive: true, force: true });
  });

  const PATHS = [
    '/',
    '/etc',
    '/etc/passwd',
    '/etc/group',
    '/etc/hostname',
    '/etc/hosts',
    '/etc/missing',
    '/opaque/new',
    '/opaque/old',
    '/gone',
    '/gone/file',
    '/was-dir',
    '/was-dir/file',
    '/link/target',
    '/link/rel-link',
    '/real/rel-link',
    '/proc',
    '/nothing/at/all',
  ];

  it('finds what the overlay mount shows, and nothing it hides', async () => {
    const tree = LayeredTree.ofOverlay({ lower: LAYERS.map(layer) });
    assert.ok(tree !== undefined);
    for (const p of PATHS) {
      const found = await tree.find(p);
      const throughMount = await fs.lstat(await resolveInRoot(merged, p)).catch(() => undefined);
      assert.equal(found !== undefined, throughMount !== undefined, `${p}: found ${found?.hostPath ?? 'nothing'}`);
      if (found === undefined || throughMount === undefined) continue;
      assert.equal(found.stats.isDirectory(), throughMount.isDirectory(), p);
      if (found.stats.isFile()) {
        assert.equal(await fs.readFile(found.hostPath, 'utf8'), await fs.readFile(await resolveInRoot(merged, p), 'utf8'), p);
      }
    }
  });

  it('resolves without following the last link, and says where a change would be written', async () => {
    const upper = path.join(base, 'upper');
    await fs.mkdir(upper, { recursive: true });
    const tree = treeOfMounts([
      { type: 'overlay', lower: LAYERS.map(layer), upper: { dir: upper, work: path.join(base, 'work') } },
    ]);
    assert.equal(tree?.writable, upper);
    assert.deepEqual(await tree?.resolve('/link', { followFinal: false }), ['link']);
    assert.deepEqual(await tree?.resolve('/link/rel-link'), ['etc', 'passwd']);
    assert.equal((await tree?.entry(['link']))?.stats.isSymbolicLink(), true);
  });

  it('reads a plain directory as itself: a 0/0 device there is a device', async () => {
    const tree = LayeredTree.ofDirectory(layer('middle'));
    assert.equal(tree.writable, layer('middle'));
    assert.equal((await tree.find('/gone'))?.stats.isCharacterDevice(), true);
    assert.equal((await tree.find('/opaque/new'))?.hostPath, path.join(layer('middle'), 'opaque/new'));
  });

  it('declines mounts it cannot read', () => {
    assert.equal(treeOfMounts([]), undefined);
    assert.equal(treeOfMounts([{ type: 'tmpfs' }]), undefined);
    assert.equal(treeOfMounts([{ type: 'overlay', lower: ['relative/a', 'relative/b'] }]), undefined);
    const bind = { type: 'bind', source: base, readonly: false } as const;
    assert.equal(treeOfMounts([bind, bind]), undefined);
  });
});
