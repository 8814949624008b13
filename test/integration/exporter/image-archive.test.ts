import assert from 'node:assert/strict';
import { watch } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { execa } from 'execa';
import { ContentStore } from '../../../src/content/store.js';
import { type Descriptor, type ImageConfig, type ImageManifest, MEDIA_TYPES } from '../../../src/content/types.js';
import { sha256 } from '../../../src/digest.js';
import { ERROR_CODES, KilnError } from '../../../src/errors.js';
import { writeDockerArchive, writeOciArchive } from '../../../src/exporter/image-archive.js';

const NAME = '127.0.0.1:5000/kiln/archive-test:v1';

/**
 * A two-layer image in a fresh store: layer 1 has etc/hello, bin/tool and
 * doomed.txt; layer 2 adds added.txt and whites out doomed.txt. Layers are
 * made by GNU tar, gzipped, so the archives carry what a registry would.
 */
async function makeImage(work: string, store: ContentStore, extraLayer?: Buffer): Promise<Descriptor> {
  const l1 = path.join(work, 'l1');
  const l2 = path.join(work, 'l2');
  await fs.mkdir(path.join(l1, 'etc'), { recursive: true });
  await fs.mkdir(path.join(l1, 'bin'));
  await fs.writeFile(path.join(l1, 'etc', 'hello'), 'hello from layer 1\n');
  await fs.writeFile(path.join(l1, 'bin', 'tool'), '#!/bin/sh\necho tool\n', { mode: 0o755 });
  await fs.writeFile(path.join(l1, 'doomed.txt'), 'deleted by layer 2\n');
  await fs.mkdir(l2);
  await fs.writeFile(path.join(l2, 'added.txt'), 'added by layer 2\n');
  await fs.writeFile(path.join(l2, '.wh.doomed.txt'), '');

  const layers: Descriptor[] = [];
  const diffIds = [];
  for (const dir of [l1, l2]) {
    const file = `${dir}.tar.gz`;
    await execa('tar', ['-czf', file, '--numeric-owner', '--owner=0', '--group=0', '-C', dir, '.']);
    const gz = await fs.readFile(file);
    diffIds.push(sha256(gunzipSync(gz)));
    const blob = await store.write(gz);
    layers.push({ mediaType: MEDIA_TYPES.ociLayerGzip, ...blob });
  }
  if (extraLayer !== undefined) {
    layers.push({ mediaType: MEDIA_TYPES.ociLayer, ...(await store.write(extraLayer)) });
    diffIds.push(sha256(extraLayer));
  }
  const config: ImageConfig = {
    architecture: 'amd64',
    os: 'linux',
    config: { Cmd: ['/bin/tool'] },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: diffIds.map((_, i) => ({ created_by: `layer ${i + 1}` })),
  };
  const configBlob = await store.writeJson(config);
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.ociManifest,
    config: { mediaType: MEDIA_TYPES.ociConfig, digest: configBlob.digest, size: configBlob.size },
    layers,
  };
  const manifestBlob = await store.writeJson(manifest);
  return { mediaType: MEDIA_TYPES.ociManifest, digest: manifestBlob.digest, size: manifestBlob.size };
}

interface SkopeoInspect {
  readonly Digest: string;
  readonly Layers: readonly string[];
  readonly Architecture: string;
}

async function skopeoInspect(ref: string): Promise<SkopeoInspect> {
  const { stdout } = await execa('skopeo', ['inspect', ref]);
  return JSON.parse(stdout) as SkopeoInspect;
}

/** Unpacks an OCI layout image with umoci (we are root) and returns its rootfs. */
async function umociUnpack(layout: string, tag: string, bundle: string): Promise<string> {
  await execa('umoci', ['unpack', '--image', `${layout}:${tag}`, bundle]);
  return path.join(bundle, 'rootfs');
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}

async function untar(archive: string, into: string): Promise<void> {
  await fs.mkdir(into);
  await execa('tar', ['-xf', archive, '-C', into]);
}

describe('image archives', () => {
  let work: string;
  let store: ContentStore;
  let image: Descriptor;
  let manifest: ImageManifest;
  before(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-image-archive-'));
    store = new ContentStore(path.join(work, 'root'));
    image = await makeImage(work, store);
    manifest = await store.readJson<ImageManifest>(image.digest);
  });
  after(async () => {
    await fs.rm(work, { recursive: true, force: true });
  });

  describe('writeOciArchive', () => {
    let archive: string;
    before(async () => {
      archive = path.join(work, 'image.oci.tar');
      await writeOciArchive([{ manifest: image, name: NAME }], store, archive);
    });

    it('is read by skopeo as the same manifest and layers, with and without the tag', async () => {
      for (const ref of [`oci-archive:${archive}`, `oci-archive:${archive}:v1`]) {
        const info = await skopeoInspect(ref);
        assert.equal(info.Digest, image.digest, ref);
        assert.deepEqual(info.Layers, manifest.layers.map((l) => l.digest), ref);
        assert.equal(info.Architecture, 'amd64');
      }
    });

    it('holds oci-layout, index.json with the name annotations, and every blob, in a fixed order', async () => {
      const { stdout } = await execa('tar', ['--numeric-owner', '-tvf', archive]);
      const lines = stdout.split('\n');
      const hex = (d: Descriptor): string => `blobs/sha256/${d.digest.slice(7)}`;
      const names = lines.map((line) => line.split(' ').at(-1));
      assert.deepEqual(names, ['oci-layout', 'index.json', 'blobs/', 'blobs/sha256/', hex(image), hex(manifest.config), ...manifest.layers.map(hex)]);
      for (const line of lines) assert.match(line, /^(-rw-r--r--|drwxr-xr-x) 0\/0 .* 1970-01-01 00:00 /);

      const out = path.join(work, 'oci-listing');
      await untar(archive, out);
      assert.deepEqual(JSON.parse(await fs.readFile(path.join(out, 'oci-layout'), 'utf8')), { imageLayoutVersion: '1.0.0' });
      const index = JSON.parse(await fs.readFile(path.join(out, 'index.json'), 'utf8')) as unknown;
      assert.deepEqual(index, {
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.ociIndex,
        manifests: [
          {
            mediaType: MEDIA_TYPES.ociManifest,
            digest: image.digest,
            size: image.size,
            annotations: { 'io.containerd.image.name': NAME, 'org.opencontainers.image.ref.name': 'v1' },
          },
        ],
      });
    });

    it('unpacks with umoci to the merged rootfs: whited-out file gone', async () => {
      const layout = path.join(work, 'oci-layout');
      await untar(archive, layout);
      const rootfs = await umociUnpack(layout, 'v1', path.join(work, 'oci-bundle'));
      assert.equal(await fs.readFile(path.join(rootfs, 'etc', 'hello'), 'utf8'), 'hello from layer 1\n');
      assert.equal(await fs.readFile(path.join(rootfs, 'added.txt'), 'utf8'), 'added by layer 2\n');
      assert.equal((await fs.stat(path.join(rootfs, 'bin', 'tool'))).mode & 0o777, 0o755);
      assert.equal(await exists(path.join(rootfs, 'doomed.txt')), false);
      assert.equal(await exists(path.join(rootfs, '.wh.doomed.txt')), false);
    });

    it('is byte-identical when written again, to a file or a stream', async () => {
      const again = path.join(work, 'again.oci.tar');
      await writeOciArchive([{ manifest: image, name: NAME }], store, again);
      const chunks: Buffer[] = [];
      const sink = new Writable({
        write(chunk: Buffer, _encoding, done) {
          chunks.push(chunk);
          done();
        },
      });
      await writeOciArchive([{ manifest: image, name: NAME }], store, sink);
      const first = await fs.readFile(archive);
      assert.deepEqual(await fs.readFile(again), first);
      assert.deepEqual(Buffer.concat(chunks), first);
      assert.ok(sink.writableFinished, 'the stream is ended after the archive');
    });

    it('leaves out the annotations of an unnamed image; skopeo still finds the only one', async () => {
      const unnamed = path.join(work, 'unnamed.oci.tar');
      await writeOciArchive([{ manifest: image }], store, unnamed);
      const { stdout } = await execa('tar', ['-xOf', unnamed, 'index.json']);
      assert.deepEqual(JSON.parse(stdout), {
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.ociIndex,
        manifests: [{ mediaType: MEDIA_TYPES.ociManifest, digest: image.digest, size: image.size }],
      });
      assert.equal((await skopeoInspect(`oci-archive:${unnamed}`)).Digest, image.digest);
    });
  });

  describe('writeDockerArchive', () => {
    let archive: string;
    before(async () => {
      archive = path.join(work, 'image.docker.tar');
      await writeDockerArchive([{ manifest: image, name: NAME }], store, archive);
    });

    it('writes manifest.json and repositories as docker load reads them', async () => {
      const out = path.join(work, 'docker-listing');
      await untar(archive, out);
      const blob = (d: Descriptor): string => `blobs/sha256/${d.digest.slice(7)}`;
      assert.deepEqual(JSON.parse(await fs.readFile(path.join(out, 'manifest.json'), 'utf8')), [
        { Config: blob(manifest.config), RepoTags: [NAME], Layers: manifest.layers.map(blob) },
      ]);
      const top = manifest.layers.at(-1)?.digest.slice(7);
      assert.deepEqual(JSON.parse(await fs.readFile(path.join(out, 'repositories'), 'utf8')), { '127.0.0.1:5000/kiln/archive-test': { v1: top } });
    });

    it('is read by skopeo, by its RepoTag too, and copies into an OCI layout that umoci unpacks', async () => {
      const config = await store.readJson<ImageConfig>(manifest.config.digest);
      for (const ref of [`docker-archive:${archive}`, `docker-archive:${archive}:${NAME}`]) {
        const info = await skopeoInspect(ref);
        // containers/image serves docker-archive layers decompressed, addressed by diff_id.
        assert.deepEqual(info.Layers, config.rootfs.diff_ids, ref);
      }
      // skopeo finds images by their RepoTags: a name the archive does not have is refused.
      await assert.rejects(execa('skopeo', ['inspect', `docker-archive:${archive}:127.0.0.1:5000/kiln/other:v2`]), /not found|does not match/i);
      const layout = path.join(work, 'from-docker');
      await execa('skopeo', ['copy', `docker-archive:${archive}`, `oci:${layout}:copied`]);
      const rootfs = await umociUnpack(layout, 'copied', path.join(work, 'docker-bundle'));
      assert.equal(await fs.readFile(path.join(rootfs, 'added.txt'), 'utf8'), 'added by layer 2\n');
      assert.equal(await exists(path.join(rootfs, 'doomed.txt')), false);
    });

    it('is also an OCI archive', async () => {
      assert.equal((await skopeoInspect(`oci-archive:${archive}:v1`)).Digest, image.digest);
    });

    it('is byte-identical when written again', async () => {
      const again = path.join(work, 'again.docker.tar');
      await writeDockerArchive([{ manifest: image, name: NAME }], store, again);
      assert.deepEqual(await fs.readFile(again), await fs.readFile(archive));
    });

    it('refuses an image without a tagged name', async () => {
      for (const name of [undefined, '127.0.0.1:5000/kiln/archive-test']) {
        const dest = path.join(work, 'untagged.tar');
        await assert.rejects(writeDockerArchive([{ manifest: image, ...(name === undefined ? {} : { name }) }], store, dest), (err: unknown) => {
          assert.ok(err instanceof KilnError);
          assert.equal(err.code, ERROR_CODES.OUTPUT);
          assert.match(err.message, /REPOSITORY:TAG/);
          return true;
        });
        assert.equal(await exists(dest), false);
      }
    });
  });

  describe('failures', () => {
    it('names a blob missing from the store and leaves an earlier dest untouched', async () => {
      const other = new ContentStore(path.join(work, 'partial-root'));
      await other.write(await store.readBytes(image.digest));
      const dest = path.join(work, 'kept.tar');
      await fs.writeFile(dest, 'earlier output');
      await assert.rejects(writeOciArchive([{ manifest: image, name: NAME }], other, dest), (err: unknown) => {
        assert.ok(err instanceof KilnError);
        assert.equal(err.code, ERROR_CODES.CONTENT);
        assert.match(err.message, new RegExp(`the config of image ${NAME} \\(${manifest.config.digest}\\) is not in kiln's content store`));
        return true;
      });
      assert.equal(await fs.readFile(dest, 'utf8'), 'earlier output');
    });

    it('refuses a descriptor that is not an image manifest', async () => {
      await assert.rejects(
        writeOciArchive([{ manifest: { ...image, mediaType: MEDIA_TYPES.ociIndex } }], store, path.join(work, 'index.tar')),
        (err: unknown) => err instanceof KilnError && err.code === ERROR_CODES.IMAGE && /not an image manifest/.test(err.message),
      );
    });

    it('stops on abort while streaming blobs, leaving nothing new at dest', async () => {
      const bigWork = path.join(work, 'big');
      await fs.mkdir(bigWork);
      const bigStore = new ContentStore(path.join(bigWork, 'root'));
      // A 32 MiB layer (its bytes never read as a tar): long enough to abort in the middle of.
      const big = await makeImage(bigWork, bigStore, Buffer.alloc(32 * 1024 * 1024, 1));
      const outDir = path.join(work, 'abort-out');
      await fs.mkdir(outDir);
      const dest = path.join(outDir, 'image.tar');
      await fs.writeFile(dest, 'earlier output');
      const controller = new AbortController();
      const reason = new Error('stop now');
      // Abort as soon as the staging file appears, so the abort lands mid-archive.
      const watcher = watch(outDir, (_event, name) => {
        if (name?.includes('.kiln-tmp-') === true) controller.abort(reason);
      });
      try {
        await assert.rejects(writeOciArchive([{ manifest: big, name: NAME }], bigStore, dest, { signal: controller.signal }), (err: unknown) => err === reason);
      } finally {
        watcher.close();
      }
      assert.ok(controller.signal.aborted);
      assert.deepEqual(await fs.readdir(outDir), ['image.tar']);
      assert.equal(await fs.readFile(dest, 'utf8'), 'earlier output');
    });
  });
});

