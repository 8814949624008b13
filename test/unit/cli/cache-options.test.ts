import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { parseCacheExport, parseCacheImport, writeMetadataFile } from '../../../src/cli/cache-options.js';
import { sha256 } from '../../../src/digest.js';

describe('--export-cache / --import-cache / --metadata-file', () => {
  it('parses buildctl-style specs', () => {
    assert.deepEqual(parseCacheExport('type=registry,ref=127.0.0.1:5000/app:cache,mode=max,compression=uncompressed,ignore-error=true,registry.insecure=true'), {
      type: 'registry',
      ref: '127.0.0.1:5000/app:cache',
      mode: 'max',
      compression: 'uncompressed',
      ignoreError: true,
      insecure: true,
    });
    assert.deepEqual(parseCacheExport('type=local,dest=cache'), { type: 'local', dest: resolve('cache') });
    assert.deepEqual(parseCacheImport('type=registry,ref=reg.example/app:cache'), { type: 'registry', ref: 'reg.example/app:cache' });
    assert.deepEqual(parseCacheImport('type=local,src=/c,tag=main'), { type: 'local', src: '/c', tag: 'main' });
  });

  it('parses cache-mounts= (all, or ids separated by ";", ":" or commas in a quoted field) and ignore-error on imports', () => {
    const dest = resolve('c');
    assert.deepEqual(parseCacheExport('type=local,dest=c,cache-mounts=all'), { type: 'local', dest, cacheMounts: 'all' });
    assert.deepEqual(parseCacheExport('type=local,dest=c,cache-mounts=go;npm'), { type: 'local', dest, cacheMounts: ['go', 'npm'] });
    assert.deepEqual(parseCacheExport('type=local,dest=c,cache-mounts=go:npm:go'), { type: 'local', dest, cacheMounts: ['go', 'npm'] });
    assert.deepEqual(parseCacheExport('type=local,dest=c,"cache-mounts=go,npm"'), { type: 'local', dest, cacheMounts: ['go', 'npm'] });
    assert.deepEqual(parseCacheExport('type=registry,ref=127.0.0.1:5000/a:c,cache-mounts=/root/.cache/go-build,registry.insecure=true'), {
      type: 'registry',
      ref: '127.0.0.1:5000/a:c',
      cacheMounts: ['/root/.cache/go-build'],
      insecure: true,
    });
    assert.deepEqual(parseCacheImport('type=registry,ref=reg.example/app:cache,ignore-error=false'), { type: 'registry', ref: 'reg.example/app:cache', ignoreError: false });
    assert.deepEqual(parseCacheImport('type=local,src=/c,ignore-error=true'), { type: 'local', src: '/c', ignoreError: true });
    const refused: [string, RegExp][] = [
      ['type=local,dest=c,cache-mounts=', /cache-mounts needs cache ids/],
      ['type=local,dest=c,cache-mounts=;', /cache-mounts needs cache ids/],
      ['type=local,dest=c,cache-mounts=all;go', /cache-mounts=all cannot be combined/],
      ['type=local,dest=c,cache-mounts=go,npm', /expected key=value pairs/],
    ];
    for (const [spec, why] of refused) assert.throws(() => parseCacheExport(spec), (err: Error & { code?: string }) => err.code === 'E_USAGE' && why.test(err.message));
    assert.throws(() => parseCacheImport('type=local,src=/c,ignore-error=no'), /ignore-error must be true or false/);
  });

  it('refuses bad specs with one line naming the flag and the problem', () => {
    const cases: [() => unknown, RegExp][] = [
      [() => parseCacheExport('type=gha'), /--export-cache "type=gha": type must be registry or local/],
      [() => parseCacheExport('type=registry,ref=x,mode=all'), /mode must be min or max/],
      [() => parseCacheExport('type=registry'), /ref is required/],
      [() => parseCacheExport('type=local,dest=d,ref=x'), /unknown key "ref" \(type=local takes/],
      [() => parseCacheExport('type=registry,ref=x/Y:1'), /invalid image reference/],
      [() => parseCacheImport('type=local'), /--import-cache "type=local": src is required/],
      [() => parseCacheImport('type=registry,ref=x,mode=max'), /unknown key "mode"/],
      [() => parseCacheExport('type=registry,ref=x,ignore-error=yes'), /ignore-error must be true or false/],
    ];
    for (const [run, why] of cases) assert.throws(run, (err: Error & { code?: string }) => err.code === 'E_USAGE' && why.test(err.message));
  });

  it('writes buildctl keys for the image and the cache refs, atomically', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-meta-'));
    try {
      const image = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha256('m'), size: 3 };
      const cache = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha256('c'), size: 4 };
      await writeMetadataFile(join(dir, 'meta.json'), {
        outputs: [{ type: 'local' }, { type: 'image', name: 'example.com/app:1', descriptor: image }],
        caches: [{ type: 'registry', ref: 'example.com/app:cache', descriptor: cache }],
      });
      const meta = JSON.parse(await readFile(join(dir, 'meta.json'), 'utf8')) as Record<string, unknown>;
      assert.deepEqual(meta, {
        'containerimage.digest': image.digest,
        'containerimage.descriptor': image,
        'image.name': 'example.com/app:1',
        'cache.exports': [{ type: 'registry', ref: 'example.com/app:cache', digest: cache.digest, descriptor: cache }],
      });
      assert.deepEqual(await readdir(dir), ['meta.json']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
