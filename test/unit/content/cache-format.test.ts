import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CACHE_MEDIA_TYPES, type CacheDescription, cacheManifest, parseCacheDescription } from '../../../src/content/cache-format.js';
import { type CacheKey, sha256 } from '../../../src/digest.js';

const layer = { digest: sha256('blob'), size: 4, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', diffID: sha256('tar'), variant: 'gzip-default' };
const description: CacheDescription = {
  version: 1,
  layers: [layer],
  records: [{ key: sha256('key') as string as CacheKey, op: 'RUN make', created: '2026-01-01T00:00:00.000Z', size: 4, outputs: [[0], null] }],
};
const config = { mediaType: CACHE_MEDIA_TYPES.config, digest: sha256('config'), size: 10 };

function parse(manifest: unknown, doc: unknown) {
  return parseCacheDescription(manifest, Buffer.from(JSON.stringify(doc)), 'registry r/x:cache');
}

describe('cache format', () => {
  it('a manifest and description written by kiln read back as they were', () => {
    const manifest = cacheManifest(config, description);
    assert.equal(manifest.artifactType, CACHE_MEDIA_TYPES.artifact);
    assert.deepEqual(manifest.layers, [{ mediaType: layer.mediaType, digest: layer.digest, size: layer.size }]);
    assert.deepEqual(parse(manifest, description), description);
  });

  it('refuses what is not a kiln cache, saying why and naming the cache', () => {
    const manifest = cacheManifest(config, description);
    const cases: [unknown, unknown, RegExp][] = [
      [{ ...manifest, config: { ...config, mediaType: 'application/vnd.oci.image.config.v1+json' } }, description, /config is not application\/vnd\.kiln\.cache/],
      [manifest, { ...description, version: 2 }, /not version 1/],
      [{ ...manifest, layers: [] }, description, /1 layers, the manifest 0/],
      [{ ...manifest, layers: [{ ...manifest.layers[0], digest: sha256('other') }] }, description, /layer 0 is not the manifest's layer 0/],
      [manifest, { ...description, layers: [{ ...layer, mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd' }] }, /gzip and uncompressed/],
      [manifest, { ...description, records: [{ ...description.records[0], outputs: [[3]] }] }, /record 0/],
      [manifest, { ...description, records: [{ ...description.records[0], key: 7 }] }, /record 0/],
    ];
    for (const [m, d, why] of cases) {
      assert.throws(() => parse(m, d), (err: Error & { code?: string }) => err.code === 'E_CONTENT' && why.test(err.message) && err.message.startsWith('registry r/x:cache: not a kiln cache'));
    }
    assert.throws(() => parseCacheDescription(manifest, Buffer.from('{'), 'c'), /not JSON/);
  });

  it('reads cache mount records, and refuses ones without an id, with layers it lacks, or listed twice', () => {
    const mount = { id: 'go-build', created: '2026-01-01T00:00:00.000Z', size: 4, layers: [0] };
    const withMounts: CacheDescription = { ...description, mounts: [mount, { ...mount, id: 'empty', size: 0, layers: [] }] };
    const manifest = cacheManifest(config, withMounts);
    assert.deepEqual(parse(manifest, withMounts).mounts, withMounts.mounts);
    const cases: [unknown, RegExp][] = [
      [{ ...description, mounts: {} }, /mounts is not a list/],
      [{ ...description, mounts: [{ ...mount, id: '' }] }, /cache mount 0 lacks an id/],
      [{ ...description, mounts: [{ ...mount, layers: [1] }] }, /cache mount 0 lacks an id or valid layers/],
      [{ ...description, mounts: [mount, mount] }, /cache mount "go-build" is listed twice/],
    ];
    for (const [d, why] of cases) assert.throws(() => parse(manifest, d), (err: Error & { code?: string }) => err.code === 'E_CONTENT' && why.test(err.message));
  });
});
