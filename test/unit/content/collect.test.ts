/**
 * The content half of prune: the marking as a pure function, then a real
 * root where one session prunes while another holds blobs it is using.
 */
import assert from 'node:assert/strict';
import { access, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createCacheManager } from '../../../src/cache/manager.js';
import type { CacheManager } from '../../../src/cache/types.js';
import { Lease } from '../../../src/cache/leases.js';
import { Storage } from '../../../src/client/storage.js';
import { ContentStore } from '../../../src/content/store.js';
import { markContent, type ContentView } from '../../../src/content/collect.js';
import type { Descriptor, ImageManifest } from '../../../src/content/types.js';
import { type Digest, sha256 } from '../../../src/digest.js';
import type { CacheKey } from '../../../src/digest.js';

const digest = (name: string): Digest => sha256(name);
const desc = (name: string): Descriptor => ({ mediaType: 'application/octet-stream', digest: digest(name), size: 1 });
const manifest = (config: string, layers: readonly string[]): ImageManifest => ({
  schemaVersion: 2,
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  config: desc(config),
  layers: layers.map(desc),
});

describe('content marking', () => {
  test('live layers keep their blobs; named images and used references keep manifest, config and layers; the rest is dead', () => {
    const view: ContentView = {
      liveLayers: new Set(['overlayfs:live']),
      layerBlobs: new Map([
        ['overlayfs:live', { diffID: digest('diff'), blobs: { source: desc('pulled'), 'gzip-default': desc('exported') } }],
        ['overlayfs:gone', { diffID: digest('diff2'), blobs: { 'gzip-default': desc('orphan-layer') } }],
      ]),
      images: new Map([['example.com/app:1', { manifest: desc('app-manifest'), size: 3, createdAt: 0 }]]),
      resolved: new Map([
        ['docker.io/library/base:1 linux/amd64', { descriptor: desc('base-manifest') }],
        ['docker.io/library/old:1 linux/amd64', { descriptor: desc('old-manifest') }],
      ]),
      manifests: new Map([
        [digest('app-manifest'), manifest('app-config', ['pulled', 'app-layer'])],
        [digest('base-manifest'), manifest('base-config', ['pulled'])],
        [digest('old-manifest'), manifest('old-config', ['old-layer'])],
      ]),
    };
    const marks = markContent(view);
    assert.deepEqual(
      [...marks.blobs].sort(),
      ['pulled', 'exported', 'app-manifest', 'app-config', 'app-layer', 'base-manifest', 'base-config'].map(digest).sort(),
    );
    assert.deepEqual(marks.deadLayerRecords, ['overlayfs:gone']);
    assert.deepEqual(marks.deadResolved, ['docker.io/library/old:1 linux/amd64']);
    assert.match(marks.reasons.get(digest('app-layer')) ?? '', /layer 2\/2 of example.com\/app:1/);
  });
});

describe('content sweep on a real root', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'kiln-collect-'));
  });
  after(async () => rm(root, { recursive: true, force: true }));

  const exists = (p: string): Promise<boolean> => access(p).then(() => true, () => false);

  test('prune keeps what records keep and what another session holds, and removes the rest once it is released', async () => {
    const storage = await Storage.open(root);
    const cache: CacheManager = await createCacheManager({ root, store: storage.store });
    // Another session's content store on the same root: its own lease holds what it writes.
    const lease = new Lease<Digest>(storage.store.volatile, 'content');
    const builder = new ContentStore(root, {
      records: storage.content.records,
      holds: { hold: (d) => lease.acquire([d]), exclusive: (fn) => fn(new Set()) },
    });
    try {
      // A result whose layer was exported to a blob, a named image, and a blob nothing keeps.
      const mutable = await cache.newMutable(null, { description: 'layer' });
      const ref = await mutable.commit();
      await cache.save(sha256('result') as string as CacheKey, [ref], { description: 'result' });
      const layerBlob = await builder.write(Buffer.from('layer tar'));
      const [layer] = await ref.layers();
      assert.ok(layer !== undefined);
      builder.records.layerBlobs.put(layer.id, { diffID: digest('diff'), blobs: { 'gzip-default': { mediaType: 'x', ...layerBlob } } });
      const config = await builder.writeJson({ rootfs: { diff_ids: [] } });
      const image = await builder.writeJson({ schemaVersion: 2, config: { mediaType: 'x', digest: config.digest, size: config.size }, layers: [] });
      builder.records.images.put('example.com/app:1', { manifest: { mediaType: 'x', digest: image.digest, size: image.size }, size: 1, createdAt: 0 });
      const loose = await builder.write(Buffer.from('nobody keeps me'));
      await ref.release();

      // The other session still holds every blob it wrote: no blob goes.
      const first = await storage.prune(cache, { keepDuration: 3_600_000 });
      assert.deepEqual(first.removed.filter((r) => r.kind === 'blob'), []);
      assert.ok(await exists(path.join(root, 'content', 'blobs', 'sha256', loose.digest.slice(7))));

      lease.close();
      // Released: the loose blob goes; the result's layer blob and the image stay.
      const second = await storage.prune(cache, { keepDuration: 3_600_000 });
      assert.deepEqual(second.removed.filter((r) => r.kind === 'blob').map((r) => r.id), [loose.digest]);
      // --all drops the result, so its snapshot, its layer record and its blob go too.
      const third = await storage.prune(cache, { all: true });
      assert.deepEqual(third.removed.filter((r) => r.kind === 'blob').map((r) => r.id), [layerBlob.digest]);
      const left = (await storage.du(cache)).filter((r) => r.kind === 'blob').map((r) => r.id).sort();
      assert.deepEqual(left, [config.digest, image.digest].sort());
      assert.equal(storage.content.records.layerBlobs.get(layer.id), undefined, 'the dead layer record went with its snapshot');
    } finally {
      lease.close();
      await cache.close();
      await storage.close();
    }
  });
});
