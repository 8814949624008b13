import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { execa } from 'execa';
import { getAttribute } from 'fs-xattr';
import { applyLayer } from '../../../../src/content/layer/unpack.js';
import { ERROR_CODES, KilnError } from '../../../../src/errors.js';
import { BINARY_XATTR, makeRichTree } from '../../../support/tree-fixture.js';
import { chunked, describeApplied, tarOf, tempDir, type TarSpec } from '../../../unit/content/layer/fixture.js';

const sha256 = (bytes: Uint8Array): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

describe('applyLayer', () => {
  let work: string;
  let n = 0;
  /** A new empty root, optionally filled as the layers below. */
  const newRoot = async (below: Record<string, string | null> = {}): Promise<string> => {
    const root = path.join(work, `root-${n++}`);
    await fs.mkdir(root);
    // A path ending in `/` is a dir, null content is a dir too; else a file with that content.
    for (const [rel, content] of Object.entries(below)) {
      const p = path.join(root, rel);
      if (content === null || rel.endsWith('/')) await fs.mkdir(p, { recursive: true });
      else {
        await fs.mkdir(path.dirname(p), { recursive: true });
        await fs.writeFile(p, content);
      }
    }
    return root;
  };
  const list = async (root: string): Promise<string[]> => ((await fs.readdir(root, { recursive: true }))).sort();

  before(async () => {
    work = await tempDir();
  });
  after(async () => {
    await fs.rm(work, { recursive: true, force: true });
  });

  it('applies a GNU tar of every kind of entry: modes, owners, mtimes (to the µs), binary xattrs, hardlinks', async () => {
    const src = path.join(work, 'rich');
    await fs.mkdir(src);
    await makeRichTree(src);
    const { stdout: tar } = await execa('tar', ['--format=posix', '--xattrs', '--xattrs-include=*', '--numeric-owner', '-cf', '-', '-C', src, '.'], {
      encoding: 'buffer',
    });
    const root = await newRoot();
    const applied = await applyLayer(chunked(tar), root, { compression: 'uncompressed' });
    assert.equal(applied.diffID, sha256(tar));
    assert.equal(applied.entries, 18);
    assert.deepEqual(await describeApplied(root), await describeApplied(src));
    assert.deepEqual(await getAttribute(path.join(root, 'a/file.txt'), 'user.kiln.binary'), Buffer.from(BINARY_XATTR));

    const gzipped = await newRoot();
    const again = await applyLayer(chunked(gzipSync(tar)), gzipped, { compression: 'gzip' });
    assert.equal(again.diffID, sha256(tar), 'the diffID is of the uncompressed tar');
    assert.deepEqual(await describeApplied(gzipped), await describeApplied(src));
  });

  it('applies whiteouts and opaque dirs to the layers below, and never creates whiteout files', async () => {
    const root = await newRoot({ keep: 'k', gone: 'g', 'gonedir/x': 'x', 'opq/old': 'o', 'opq/sub/old2': 'o2', 'opq/-early': 'e' });
    const layer = await tarOf([
      { name: '.wh..wh.plnk', type: 'directory' },
      { name: '.wh.gone' },
      { name: '.wh.gonedir' },
      { name: '.wh.never-existed' },
      { name: 'opq/', type: 'directory' },
      // Written before the marker: the marker must not remove what this layer wrote.
      { name: 'opq/-early', content: 'new early' },
      { name: 'opq/sub/', type: 'directory' },
      { name: 'opq/sub/new2', content: 'n2' },
      { name: 'opq/.wh..wh..opq' },
      { name: 'opq/new', content: 'n' },
    ]);
    await applyLayer(chunked(layer), root, { compression: 'uncompressed' });
    assert.deepEqual(await list(root), ['keep', 'opq', 'opq/-early', 'opq/new', 'opq/sub', 'opq/sub/new2']);
    assert.equal(await fs.readFile(path.join(root, 'opq/-early'), 'utf8'), 'new early');
  });

  it('replaces what is there: a file over a dir, a dir over a file, a dir over a dir keeps children', async () => {
    const root = await newRoot({ 'f/child': 'c', d: 'file', 'k/c': 'kept', target: 'untouched' });
    await fs.symlink('target', path.join(root, 's'));
    const layer = await tarOf([
      { name: 'd', type: 'directory', mode: 0o711 },
      { name: 'f', content: 'now a file' },
      { name: 'k', type: 'directory', mode: 0o700 },
      { name: 's', content: 'replaces the link' },
    ]);
    await applyLayer(chunked(layer), root, { compression: 'uncompressed' });
    assert.equal(await fs.readFile(path.join(root, 'f'), 'utf8'), 'now a file');
    assert.equal((await fs.stat(path.join(root, 'd'))).mode & 0o7777, 0o711);
    assert.equal((await fs.stat(path.join(root, 'k'))).mode & 0o7777, 0o700);
    assert.equal(await fs.readFile(path.join(root, 'k/c'), 'utf8'), 'kept');
    assert.ok((await fs.lstat(path.join(root, 's'))).isFile());
    assert.equal(await fs.readFile(path.join(root, 'target'), 'utf8'), 'untouched');
  });

  it('follows a symlink inside the root, and creates parents the archive leaves out', async () => {
    const root = await newRoot({ 'usr/lib/': null });
    const layer = await tarOf([
      { name: 'lib', type: 'symlink', linkname: 'usr/lib' },
      { name: 'lib/libx.so', content: 'x' },
      { name: 'new/deep/file', content: 'y' },
    ]);
    await applyLayer(chunked(layer), root, { compression: 'uncompressed' });
    assert.equal(await fs.readFile(path.join(root, 'usr/lib/libx.so'), 'utf8'), 'x');
    assert.equal(await fs.readFile(path.join(root, 'new/deep/file'), 'utf8'), 'y');
  });

  describe('refuses hostile layers, writing nothing outside the root', () => {
    // `entry` is the name the error must quote; OUTSIDE stands for the directory next to the root.
    const cases: { title: string; entry: string; layer: (outside: string) => TarSpec[]; below?: (root: string, outside: string) => Promise<void> }[] = [
      { title: 'a ".." name', entry: '../evil', layer: () => [{ name: '../evil', content: 'x' }] },
      { title: 'a ".." inside a name', entry: 'a/../../evil', layer: () => [{ name: 'a/../../evil', content: 'x' }] },
      { title: 'an absolute name', entry: 'OUTSIDE/evil', layer: (outside) => [{ name: `${outside}/evil`, content: 'x' }] },
      {
        title: 'a write through a symlink of the same layer that climbs out',
        entry: 'esc/pwned',
        layer: () => [{ name: 'esc', type: 'symlink', linkname: '../outside' }, { name: 'esc/pwned', content: 'x' }],
      },
      {
        title: 'a write through an absolute symlink',
        entry: 'abs/pwned',
        layer: (outside) => [{ name: 'abs', type: 'symlink', linkname: outside }, { name: 'abs/pwned', content: 'x' }],
      },
      {
        title: 'a write through a chain of symlinks that ends outside',
        entry: 'a/pwned',
        layer: () => [{ name: 'a', type: 'symlink', linkname: 'b' }, { name: 'b', type: 'symlink', linkname: 'c/../..' }, { name: 'c/', type: 'directory' }, { name: 'a/pwned', content: 'x' }],
      },
      {
        title: 'a write through a symlink a lower layer placed',
        entry: 'lower/pwned',
        layer: () => [{ name: 'lower/pwned', content: 'x' }],
        below: (root) => fs.symlink('../outside', path.join(root, 'lower')),
      },
      { title: 'a hardlink to outside', entry: 'hl', layer: () => [{ name: 'hl', type: 'link', linkname: '../outside/secret' }] },
      {
        title: 'a hardlink through a symlink that leads outside',
        entry: 'hl',
        layer: () => [{ name: 'esc', type: 'symlink', linkname: '../outside' }, { name: 'hl', type: 'link', linkname: 'esc/secret' }],
      },
      { title: 'a whiteout of ".."', entry: 'sub/.wh...', layer: () => [{ name: 'sub/.wh...' }] },
      {
        title: 'a whiteout through a symlink that leads outside',
        entry: 'esc/.wh.secret',
        layer: () => [{ name: 'esc', type: 'symlink', linkname: '../outside' }, { name: 'esc/.wh.secret' }],
      },
    ];
    for (const c of cases) {
      it(c.title, async () => {
        const dir = path.join(work, `hostile-${n++}`);
        const root = path.join(dir, 'root');
        const outside = path.join(dir, 'outside');
        await fs.mkdir(root, { recursive: true });
        await fs.mkdir(outside);
        await fs.writeFile(path.join(outside, 'secret'), 'secret');
        await c.below?.(root, outside);
        const layer = await tarOf(c.layer(outside));
        await assert.rejects(applyLayer(chunked(layer), root, { compression: 'uncompressed' }), (err: unknown) => {
          assert.ok(err instanceof KilnError && err.code === ERROR_CODES.LAYER, String(err));
          assert.ok(err.message.includes(`"${c.entry.replace('OUTSIDE', outside)}"`), err.message);
          return true;
        });
        assert.deepEqual(await fs.readdir(outside), ['secret']);
        assert.equal(await fs.readFile(path.join(outside, 'secret'), 'utf8'), 'secret');
        assert.equal((await fs.stat(path.join(outside, 'secret'))).nlink, 1);
        assert.deepEqual(await fs.readdir(dir), ['outside', 'root']);
      });
    }
  });

  it('refuses a tar that is cut short or not gzip, with E_LAYER', async () => {
    const layer = await tarOf([{ name: 'big', content: 'x'.repeat(5000) }]);
    const isLayerError = (err: unknown): boolean => err instanceof KilnError && err.code === ERROR_CODES.LAYER;
    await assert.rejects(applyLayer(chunked(layer.subarray(0, 2048)), await newRoot(), { compression: 'uncompressed' }), isLayerError);
    await assert.rejects(applyLayer(chunked(layer), await newRoot(), { compression: 'gzip' }), isLayerError);
  });

  it('makes device nodes and fifos, and skips devices with one debug line where mknod is not permitted', async () => {
    const layer = await tarOf([
      { name: 'dev/', type: 'directory' },
      { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
      { name: 'dev/zero', type: 'character-device', devmajor: 1, devminor: 5, mode: 0o666 },
      { name: 'run/fifo', type: 'fifo', mode: 0o620 },
    ]);
    const root = await newRoot();
    await applyLayer(chunked(layer), root, { compression: 'uncompressed' });
    const nullDev = await fs.lstat(path.join(root, 'dev/null'));
    assert.ok(nullDev.isCharacterDevice());
    assert.equal(nullDev.rdev, 259);
    assert.equal(nullDev.mode & 0o7777, 0o666);
    const fifo = await fs.lstat(path.join(root, 'run/fifo'));
    assert.ok(fifo.isFIFO());
    assert.equal(fifo.mode & 0o7777, 0o620);

    // The same layer applied by a process without CAP_MKNOD (as in a user namespace).
    const tarFile = path.join(work, 'devices.tar');
    await fs.writeFile(tarFile, layer);
    const unprivileged = await newRoot();
    const module = fileURLToPath(new URL('../../../../src/content/layer/unpack.js', import.meta.url));
    const script = [
      `import { createReadStream } from 'node:fs';`,
      `import { applyLayer } from ${JSON.stringify(module)};`,
      `const debug = (fields, message) => console.log(JSON.stringify({ fields, message }));`,
      `const logger = { debug, error: debug, warn: debug, info: debug, trace: debug };`,
      `await applyLayer(createReadStream(process.argv[1]), process.argv[2], { compression: 'uncompressed', logger });`,
    ].join('\n');
    const { stdout } = await execa('setpriv', ['--bounding-set', '-mknod', process.execPath, '--input-type=module', '-e', script, tarFile, unprivileged]);
    const lines = stdout.split('\n').map((line) => JSON.parse(line) as { fields: { count: number }; message: string });
    assert.equal(lines.length, 1);
    assert.equal(lines[0]?.fields.count, 2);
    assert.match(lines[0]?.message ?? '', /mknod is not permitted/);
    assert.deepEqual(await list(unprivileged), ['dev', 'run', 'run/fifo']);
  });

  it('stops when the signal aborts, with its reason', async () => {
    const layer = await tarOf([{ name: 'first', content: 'x'.repeat(3000) }, { name: 'second', content: 'y' }]);
    const controller = new AbortController();
    const reason = new Error('stop now');
    // Half a layer, then a source that never sends the rest.
    async function* stalled(): AsyncGenerator<Uint8Array> {
      yield layer.subarray(0, 1024);
      setTimeout(() => controller.abort(reason), 50);
      await new Promise(() => {});
    }
    const root = await newRoot();
    await assert.rejects(applyLayer(stalled(), root, { compression: 'uncompressed', signal: controller.signal }), (err: unknown) => err === reason);
    await assert.rejects(applyLayer(chunked(layer), root, { compression: 'uncompressed', signal: AbortSignal.abort(reason) }), (err: unknown) => err === reason);
  });
});
