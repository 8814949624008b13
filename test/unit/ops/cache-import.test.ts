import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CacheManager } from '../../../src/cache/types.js';
import type { CacheDescription } from '../../../src/content/cache-format.js';
import type { CacheTarget } from '../../../src/content/cache-target.js';
import type { ContentStore } from '../../../src/content/store.js';
import { type CacheKey, sha256 } from '../../../src/digest.js';
import { CacheImportError } from '../../../src/errors.js';
import { importCaches } from '../../../src/ops/cache-import.js';
import type { ProgressEvent } from '../../../src/progress/types.js';
import type { Vertex } from '../../../src/solver/types.js';

/** A target whose load fails with `why`, or answers `description`; counts its loads. */
function target(shown: string, answer: Error | CacheDescription): CacheTarget & { loads: number } {
  const t = {
    shown,
    loads: 0,
    load() {
      t.loads++;
      return answer instanceof Error ? Promise.reject(answer) : Promise.resolve({ descriptor: { mediaType: 'm', digest: sha256(shown), size: 1 }, description: answer });
    },
    fetchBlob: () => Promise.reject(new Error('no blobs here')),
    pushBlob: () => Promise.reject(new Error('read only')),
    pushManifest: () => Promise.reject(new Error('read only')),
  };
  return t;
}

const EMPTY: CacheDescription = { version: 1, layers: [], records: [] };
const vertex = { digest: 'v', name: 'step' } as unknown as Vertex<null>;

function setup(sources: Parameters<typeof importCaches>[0]) {
  const events: ProgressEvent[] = [];
  const caches = importCaches(sources, { cache: {} as CacheManager, content: {} as ContentStore, progress: { emit: (e) => events.push(e) } });
  const warnings = () => events.flatMap((e) => (e.type === 'warning' ? [e.message] : []));
  return { caches, warnings };
}

describe('imported caches', () => {
  const signal = new AbortController().signal;
  const key = sha256('key') as string as CacheKey;

  it('by default a cache that cannot be read is one warning naming it, then skipped (results and mounts alike)', async () => {
    const broken = target('registry r/x:missing', new Error('manifest unknown'));
    const { caches, warnings } = setup([{ target: broken }]);
    await caches.check(signal);
    assert.equal(broken.loads, 0, 'check reads only caches given ignore-error=false');
    assert.equal(await caches.results.load(key, vertex, { signal, progress: { emit() {} } }), undefined);
    assert.equal(await caches.seedMount('go', '/nowhere', { signal, vertex: 'v' }), false);
    assert.deepEqual(warnings(), ['cache import from registry r/x:missing skipped: manifest unknown']);
    assert.equal(broken.loads, 1);
  });

  it('ignore-error=false: check() reads the cache up front and fails with a CacheImportError naming it and why', async () => {
    const broken = target('local /ci/cache', new Error('no index.json'));
    const { caches, warnings } = setup([{ target: broken, ignoreError: false }]);
    await assert.rejects(caches.check(signal), (err: unknown) => {
      assert.ok(err instanceof CacheImportError);
      assert.equal(err.code, 'E_CACHE_IMPORT');
      assert.equal(err.cache, 'local /ci/cache');
      assert.equal(err.reason, 'no index.json');
      assert.equal(err.message, 'cache import from local /ci/cache failed (ignore-error=false): no index.json');
      return true;
    });
    await assert.rejects(caches.results.load(key, vertex, { signal, progress: { emit() {} } }), CacheImportError);
    assert.deepEqual(warnings(), []);
  });

  it('ignore-error=false also fails on a record whose layers cannot be used', async () => {
    const layer = { digest: sha256('blob'), size: 4, mediaType: 'application/vnd.oci.image.layer.v1.tar', diffID: sha256('tar') };
    const description: CacheDescription = { version: 1, layers: [layer], records: [{ key, op: 'step', created: '', size: 4, outputs: [[3]] }] };
    const { caches } = setup([{ target: target('registry r/x:bad', description), ignoreError: false }]);
    await caches.check(signal);
    await assert.rejects(caches.results.load(key, vertex, { signal, progress: { emit() {} } }), /cache import from registry r\/x:bad failed \(ignore-error=false\): record .* names a layer the cache does not have/);
  });

  it('a cache mount no cache carries is not seeded; the next cache is asked after a miss', async () => {
    const first = target('local /a', EMPTY);
    const second = target('local /b', { ...EMPTY, mounts: [{ id: 'go', created: '', size: 0, layers: [] }] });
    const { caches, warnings } = setup([{ target: first }, { target: second }]);
    assert.equal(await caches.seedMount('npm', '/nowhere', { signal, vertex: 'v' }), false);
    // An empty mount was exported with no layers: seeding it is done without a download.
    assert.equal(await caches.seedMount('go', '/nowhere', { signal, vertex: 'v' }), true);
    assert.deepEqual(warnings(), []);
    assert.equal(first.loads + second.loads, 2, 'each cache is read once');
  });
});
