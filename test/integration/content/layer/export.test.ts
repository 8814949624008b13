import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { execa } from 'execa';
import { getAttribute, removeAttribute, setAttribute } from 'fs-xattr';
import { extract } from 'tar-stream';
import { comparedLayerChanges, exportLayer, type LayerChange, overlayLayerChanges } from '../../../../src/content/layer/export.js';
import { applyLayer } from '../../../../src/content/layer/unpack.js';
import { ContentStore } from '../../../../src/content/store.js';
import { MEDIA_TYPES } from '../../../../src/content/types.js';
import { ERROR_CODES, KilnError } from '../../../../src/errors.js';
import { makeRichTree, setTime } from '../../../support/tree-fixture.js';
import { describeExported, tempDir } from '../../../unit/content/layer/fixture.js';

/**
 * A valid file capability (VFS_CAP_REVISION_2, effective, cap_net_bind_service
 * permitted): the kernel checks the format of what is set as security.capability.
 */
const NET_BIND_CAPABILITY = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, ...Array<number>(12).fill(0)]);

/** The xattrs (pax SCHILY.xattr records) of every entry of a tar, by name: value as hex. */
async function tarXattrs(tar: Buffer): Promise<Record<string, Record<string, string>>> {
  const reader = extract();
  const found: Record<string, Record<string, string>> = {};
  const done = (async () => {
    for await (const entry of reader) {
      const xattrs: Record<string, string> = {};
      for (const [key, value] of Object.entries(entry.header.pax ?? {})) {
        if (key.startsWith('SCHILY.xattr.')) xattrs[key.slice('SCHILY.xattr.'.length)] = Buffer.from(value, 'binary').toString('hex');
      }
      found[entry.header.name] = xattrs;
      entry.resume();
    }
  })();
  reader.end(tar);
  await done;
  return found;
}

/** Name, type and mtime (seconds) of every entry of a tar, in order. */
async function tarEntries(tar: Buffer): Promise<{ name: string; type: string; mtime: number }[]> {
  const reader = extract();
  const entries: { name: string; type: string; mtime: number }[] = [];
  const done = (async () => {
    for await (const entry of reader) {
      entries.push({ name: entry.header.name, type: entry.header.type, mtime: entry.header.mtime.getTime() / 1000 });
      entry.resume();
    }
  })();
  reader.end(tar);
  await done;
  return entries;
}

describe('layer export', () => {
  let work: string;
  let store: ContentStore;
  let n = 0;
  const dir = async (name: string): Promise<string> => {
    const p = path.join(work, `${name}-${n++}`);
    await fs.mkdir(p);
    return p;
  };
  const blob = (digest: string): Promise<Buffer> => fs.readFile(store.path(digest as Parameters<ContentStore['path']>[0]));

  before(async () => {
    work = await tempDir();
    store = new ContentStore(path.join(work, 'kiln-root'));
  });
  after(async () => {
    await fs.rm(work, { recursive: true, force: true });
  });

  it('gives the same digests for the same tree, whatever the order it was made in or the time of export', async () => {
    const make = async (order: readonly string[]): Promise<string> => {
      const root = await dir('tree');
      for (const rel of order) {
        await fs.mkdir(path.join(root, path.dirname(rel)), { recursive: true });
        await fs.writeFile(path.join(root, rel), `content of ${rel}\n`.repeat(100));
      }
      await fs.link(path.join(root, 'b/two'), path.join(root, 'b/linked'));
      for (const rel of ['a/one', 'a/three', 'b/two', 'a', 'b']) await setTime(path.join(root, rel), 1_650_000_000, 1000);
      return root;
    };
    const first = await make(['a/one', 'a/three', 'b/two']);
    const second = await make(['b/two', 'a/three', 'a/one']);
    const exportOf = async (root: string) => exportLayer(await comparedLayerChanges(undefined, root), store, { compression: 'gzip' });
    const one = await exportOf(first);
    const two = await exportOf(second);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const later = await exportOf(first);
    assert.equal(one.mediaType, MEDIA_TYPES.ociLayerGzip);
    assert.equal(two.diffID, one.diffID);
    assert.equal(two.blob.digest, one.blob.digest);
    assert.equal(later.blob.digest, one.blob.digest);

    const gz = await blob(one.blob.digest);
    // gzip header: magic, deflate, no flags, mtime 0, extra flags, OS 3 (Unix).
    assert.deepEqual([...gz.subarray(0, 10)], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
    const entries = await tarEntries(gunzipSync(gz));
    assert.deepEqual(entries.map((e) => `${e.type} ${e.name}`), ['directory a/', 'file a/one', 'file a/three', 'directory b/', 'file b/linked', 'link b/two']);

    const plain = await exportLayer(await comparedLayerChanges(undefined, first), store, { compression: 'uncompressed' });
    assert.equal(plain.mediaType, MEDIA_TYPES.ociLayer);
    assert.equal(plain.blob.digest, one.diffID, 'an uncompressed blob is its own diffID');
  });

  it('writes mtimes in whole seconds, with no pax record for an entry ustar holds', async () => {
    const root = await dir('seconds');
    await fs.writeFile(path.join(root, 'f'), 'x');
    await setTime(path.join(root, 'f'), 1_700_000_000, 987_654_321);
    const plain = await exportLayer(await comparedLayerChanges(undefined, root), store, { compression: 'uncompressed' });
    const tar = await blob(plain.blob.digest);
    // One ustar header, one block of body, the end of the archive: what GNU tar writes for it (before its record padding).
    assert.equal(tar.length, 512 + 512 + 1024);
    assert.deepEqual((await tarEntries(tar)).map((e) => [e.name, e.mtime]), [['f', 1_700_000_000]]);
  });

  it('clamps mtimes to SOURCE_DATE_EPOCH', async () => {
    const root = await dir('clamp');
    await fs.writeFile(path.join(root, 'new'), 'n');
    await fs.writeFile(path.join(root, 'old'), 'o');
    await setTime(path.join(root, 'new'), 2_000_000_000, 5);
    await setTime(path.join(root, 'old'), 1_000_000_000, 0);
    const changes: LayerChange[] = [...(await comparedLayerChanges(undefined, root)), { kind: 'whiteout', path: 'gone' }];
    const clamped = await exportLayer(changes.sort((a, b) => (a.path < b.path ? -1 : 1)), store, { compression: 'uncompressed', sourceDateEpoch: 1_500_000_000 });
    const entries = await tarEntries(await blob(clamped.blob.digest));
    assert.deepEqual(entries.map((e) => [e.name, e.mtime]), [['.wh.gone', 0], ['new', 1_500_000_000], ['old', 1_000_000_000]]);
  });

  it('round-trips the changes between two trees through applyLayer (compared, as native snapshots do)', async () => {
    const lower = await dir('lower');
    await makeRichTree(lower);
    const upper = path.join(work, `upper-${n++}`);
    await execa('cp', ['-a', lower, upper]);
    const u = (rel: string): string => path.join(upper, rel);
    await fs.rm(u('big.bin'));
    await fs.rm(u('deep'), { recursive: true });
    await fs.writeFile(u('a/file.txt'), 'changed through both hardlinked names\n');
    await fs.chmod(u('setuid-tool'), 0o2755);
    await fs.rm(u('link'));
    await fs.mkdir(u('link'));
    await fs.writeFile(u('link/now-a-dir'), 'x');
    await fs.rm(u('a/sub'), { recursive: true });
    await fs.writeFile(u('a/sub'), 'a dir became a file');
    await fs.mkdir(u('new/deeper'), { recursive: true });
    await fs.writeFile(u('new/deeper/file'), 'new');
    // A layer keeps only security.capability (see the test below): the changed file's user xattrs are gone from the upper too.
    await removeAttribute(u('a/file.txt'), 'user.kiln.text');
    await removeAttribute(u('a/file.txt'), 'user.kiln.binary');
    await fs.writeFile(u('new/tool'), '#!/bin/sh\n', { mode: 0o755 });
    await setAttribute(u('new/tool'), 'security.capability', NET_BIND_CAPABILITY);

    const exported = await exportLayer(await comparedLayerChanges(lower, upper), store, { compression: 'gzip' });
    const target = path.join(work, `target-${n++}`);
    await execa('cp', ['-a', lower, target]);
    const applied = await applyLayer(await store.open(exported.blob.digest), target, { compression: 'gzip' });
    assert.equal(applied.diffID, exported.diffID);
    assert.deepEqual(await describeExported(target), await describeExported(upper));

    const { stdout } = await execa('tar', ['-tvzf', store.path(exported.blob.digest)]);
    assert.match(stdout, /^-{10} 0\/0 +0 1970-01-01 00:00 \.wh\.big\.bin$/m);
    assert.match(stdout, / \.wh\.deep$/m);
    assert.match(stdout, /^h.* a\/hardlink link to a\/file\.txt$/m);
    assert.deepEqual(await getAttribute(path.join(target, 'new/tool'), 'security.capability'), NET_BIND_CAPABILITY);
  });

  it('records security.capability of an executable file and no other xattr, as containerd\'s layers do', async () => {
    const root = await dir('xattrs');
    const p = (rel: string): string => path.join(root, rel);
    await fs.mkdir(p('d'));
    await setAttribute(p('d'), 'user.kiln.dir', 'on a dir');
    await fs.writeFile(p('tool'), '#!/bin/sh\n', { mode: 0o755 });
    await setAttribute(p('tool'), 'security.capability', NET_BIND_CAPABILITY);
    await setAttribute(p('tool'), 'user.kiln.text', 'dropped');
    await fs.writeFile(p('plain'), 'x', { mode: 0o644 });
    await setAttribute(p('plain'), 'user.kiln.text', 'dropped');
    const plain = await exportLayer(await comparedLayerChanges(undefined, root), store, { compression: 'uncompressed' });
    assert.deepEqual(await tarXattrs(await blob(plain.blob.digest)), {
      'd/': {},
      plain: {},
      tool: { 'security.capability': NET_BIND_CAPABILITY.toString('hex') },
    });
  });

  it('exports an overlay upper: real overlay whiteouts and opaque dirs become .wh. entries', async () => {
    const base = await dir('overlay');
    const [lower, upper, workdir, merged] = ['lower', 'upper', 'work', 'merged'].map((name) => path.join(base, name)) as [string, string, string, string];
    await Promise.all([lower, upper, workdir, merged].map((p) => fs.mkdir(p)));
    await fs.mkdir(path.join(lower, 'dir'));
    await fs.writeFile(path.join(lower, 'dir/old'), 'old');
    await fs.writeFile(path.join(lower, 'gone'), 'gone');
    await fs.writeFile(path.join(lower, 'keep'), 'keep');
    await execa('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${workdir}`, merged]);
    let view;
    try {
      await fs.rm(path.join(merged, 'gone'));
      await fs.rm(path.join(merged, 'dir'), { recursive: true });
      await fs.mkdir(path.join(merged, 'dir'));
      await fs.writeFile(path.join(merged, 'dir/new'), 'new');
      await fs.writeFile(path.join(merged, 'added'), 'added');
      view = await describeExported(merged);
    } finally {
      await execa('umount', [merged]);
    }

    const changes = await overlayLayerChanges(upper);
    assert.deepEqual(
      changes.map((c) => `${c.kind} ${c.path}`),
      ['entry added', 'entry dir', 'opaque dir', 'entry dir/new', 'whiteout gone'],
    );
    const exported = await exportLayer(changes, store, { compression: 'gzip' });
    const { stdout } = await execa('tar', ['-tzf', store.path(exported.blob.digest)]);
    assert.deepEqual(stdout.split('\n'), ['added', 'dir/', 'dir/.wh..wh..opq', 'dir/new', '.wh.gone']);

    const target = path.join(base, 'target');
    await execa('cp', ['-a', lower, target]);
    await applyLayer(await store.open(exported.blob.digest), target, { compression: 'gzip' });
    assert.deepEqual(await describeExported(target), view);
  });

  it('rejects with the abort reason, and a bad level with E_LAYER', async () => {
    const root = await dir('abort');
    await fs.writeFile(path.join(root, 'file'), 'x');
    const changes = await comparedLayerChanges(undefined, root);
    const reason = new Error('stop');
    await assert.rejects(exportLayer(changes, store, { compression: 'gzip', signal: AbortSignal.abort(reason) }), (err: unknown) => err === reason);
    await assert.rejects(
      exportLayer(changes, store, { compression: 'gzip', level: 12 }),
      (err: unknown) => err instanceof KilnError && err.code === ERROR_CODES.LAYER && err.message.includes('12'),
    );
  });
});
