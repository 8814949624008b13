import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { importLayoutBlob, resolveOciLayout } from '../../../src/content/oci-layout.js';
import { ContentStore } from '../../../src/content/store.js';
import { type Descriptor, type ImageIndex, type ImageManifest, type ImagePlatform, MEDIA_TYPES } from '../../../src/content/types.js';
import { type Digest, sha256 } from '../../../src/digest.js';
import { ERROR_CODES, KilnError } from '../../../src/errors.js';

const AMD64: ImagePlatform = { os: 'linux', architecture: 'amd64' };
const ARM64: ImagePlatform = { os: 'linux', architecture: 'arm64', variant: 'v8' };

/** Writes a blob into the layout's blobs/sha256 and returns its descriptor. */
async function putBlob(layout: string, mediaType: string, value: unknown): Promise<Descriptor> {
  const bytes = Buffer.from(JSON.stringify(value));
  const digest = sha256(bytes);
  await fs.writeFile(path.join(layout, 'blobs', 'sha256', digest.slice(7)), bytes);
  return { mediaType, digest, size: bytes.length };
}

/** A manifest (with its config and one empty layer) for `platform`, written into the layout. */
async function putImage(layout: string, platform: ImagePlatform): Promise<Descriptor> {
  const layer = await putBlob(layout, MEDIA_TYPES.ociLayer, 'not read by resolve');
  const config = await putBlob(layout, MEDIA_TYPES.ociConfig, { ...platform, rootfs: { type: 'layers', diff_ids: [layer.digest] } });
  return putBlob(layout, MEDIA_TYPES.ociManifest, { schemaVersion: 2, mediaType: MEDIA_TYPES.ociManifest, config, layers: [layer] });
}

function isKilnError(code: string, message: RegExp): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof KilnError, String(err));
    assert.equal(err.code, code);
    assert.match(err.message, message);
    return true;
  };
}

describe('resolveOciLayout', () => {
  let work: string;
  let umociLayout: string;
  let multi: string;
  let multiIndex: Descriptor;
  let amdImage: Descriptor;
  let armImage: Descriptor;
  before(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-oci-layout-'));

    // A layout written by a tool nobody here wrote: umoci, one image tagged v1 with a file in it.
    umociLayout = path.join(work, 'umoci');
    const bundle = path.join(work, 'bundle');
    await execa('umoci', ['init', '--layout', umociLayout]);
    await execa('umoci', ['new', '--image', `${umociLayout}:v1`]);
    await execa('umoci', ['unpack', '--image', `${umociLayout}:v1`, bundle]);
    await fs.writeFile(path.join(bundle, 'rootfs', 'hello'), 'hi\n');
    await execa('umoci', ['repack', '--image', `${umociLayout}:v1`, bundle]);

    // A two-platform image: index.json -> (tagged) index -> one manifest per platform.
    multi = path.join(work, 'multi');
    await fs.mkdir(path.join(multi, 'blobs', 'sha256'), { recursive: true });
    await fs.writeFile(path.join(multi, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    amdImage = await putImage(multi, AMD64);
    armImage = await putImage(multi, ARM64);
    multiIndex = await putBlob(multi, MEDIA_TYPES.ociIndex, {
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociIndex,
      manifests: [
        { ...armImage, platform: ARM64 },
        { ...amdImage, platform: AMD64 },
      ],
    });
    const top: ImageIndex = {
      schemaVersion: 2,
      manifests: [
        { ...multiIndex, annotations: { 'org.opencontainers.image.ref.name': 'registry.example:5000/kiln/multi:2.0' } },
        { ...amdImage, annotations: { 'org.opencontainers.image.ref.name': 'amd-only' } },
      ],
    };
    await fs.writeFile(path.join(multi, 'index.json'), JSON.stringify(top));
  });
  after(async () => {
    await fs.rm(work, { recursive: true, force: true });
  });

  const freshStore = async (): Promise<ContentStore> => new ContentStore(await fs.mkdtemp(path.join(work, 'root-')));

  it('resolves a tag in a umoci layout and copies the manifest and config into the store', async () => {
    const store = await freshStore();
    const resolved = await resolveOciLayout(umociLayout, { tag: 'v1' }, AMD64, store);
    const index = JSON.parse(await fs.readFile(path.join(umociLayout, 'index.json'), 'utf8')) as ImageIndex;
    assert.equal(resolved.descriptor.digest, index.manifests[0]?.digest);
    assert.equal(resolved.config.rootfs.diff_ids.length, 1);
    assert.equal(resolved.manifest.layers.length, 1);
    assert.ok(await store.has(resolved.descriptor.digest));
    assert.ok(await store.has(resolved.manifest.config.digest));
    const layer = resolved.manifest.layers[0];
    assert.ok(layer !== undefined);
    assert.equal(await store.has(layer.digest), false, 'layers are left for importLayoutBlob');

    await importLayoutBlob(umociLayout, layer, store);
    // The layer umoci wrote holds the file added to the bundle.
    const { stdout } = await execa('tar', ['-tzf', store.path(layer.digest)]);
    assert.match(stdout, /^(\.\/)?hello$/m);
  });

  it('resolves the same image by its manifest digest', async () => {
    const store = await freshStore();
    const byTag = await resolveOciLayout(umociLayout, { tag: 'v1' }, AMD64, store);
    const byDigest = await resolveOciLayout(umociLayout, { digest: byTag.descriptor.digest }, AMD64, store);
    assert.deepEqual(byDigest, byTag);
  });

  it('picks the platform from an index, by a full name:tag ref.name, by digest, and by an unlisted blob', async () => {
    const store = await freshStore();
    assert.equal((await resolveOciLayout(multi, { tag: '2.0' }, AMD64, store)).descriptor.digest, amdImage.digest);
    assert.equal((await resolveOciLayout(multi, { tag: '2.0' }, ARM64, store)).descriptor.digest, armImage.digest);
    // Asking for arm64 without a variant takes any arm64.
    assert.equal((await resolveOciLayout(multi, { tag: '2.0' }, { os: 'linux', architecture: 'arm64' }, store)).descriptor.digest, armImage.digest);
    assert.equal((await resolveOciLayout(multi, { digest: multiIndex.digest }, ARM64, store)).descriptor.digest, armImage.digest);
    // The arm64 manifest is not in index.json: found as a blob, its media type read from it.
    const unlisted = await resolveOciLayout(multi, { digest: armImage.digest }, ARM64, store);
    assert.deepEqual(unlisted.descriptor, armImage);
    assert.equal(unlisted.config.architecture, 'arm64');
  });

  it('lists the platforms it has when none matches', async () => {
    await assert.rejects(
      resolveOciLayout(multi, { tag: '2.0' }, { os: 'linux', architecture: 's390x' }, await freshStore()),
      isKilnError(ERROR_CODES.IMAGE, new RegExp(`^OCI layout ${multi} \\(tag 2\\.0\\): no manifest for platform linux/s390x; the image has linux/arm64/v8, linux/amd64$`)),
    );
  });

  it('names the tags it has for an unknown tag', async () => {
    await assert.rejects(
      resolveOciLayout(multi, { tag: 'v9' }, AMD64, await freshStore()),
      isKilnError(ERROR_CODES.IMAGE, new RegExp(`^OCI layout ${multi} \\(tag v9\\): no image tagged "v9"; its tags: registry\\.example:5000/kiln/multi:2\\.0, amd-only$`)),
    );
  });

  it('refuses a directory that is missing or not a layout', async () => {
    const missing = path.join(work, 'nope');
    await assert.rejects(
      resolveOciLayout(missing, { tag: 'v1' }, AMD64, await freshStore()),
      isKilnError(ERROR_CODES.IMAGE, new RegExp(`^OCI layout ${missing} \\(tag v1\\): it has no oci-layout file`)),
    );
    const wrongVersion = path.join(work, 'v2-layout');
    await fs.mkdir(wrongVersion);
    await fs.writeFile(path.join(wrongVersion, 'oci-layout'), '{"imageLayoutVersion":"2.0.0"}');
    await assert.rejects(
      resolveOciLayout(wrongVersion, { tag: 'v1' }, AMD64, await freshStore()),
      isKilnError(ERROR_CODES.IMAGE, /unsupported imageLayoutVersion "2\.0\.0"/),
    );
  });

  it('refuses corrupted blobs (E_CONTENT) and stores nothing of them', async () => {
    const corrupt = path.join(work, 'corrupt');
    await fs.cp(umociLayout, corrupt, { recursive: true });
    const store = await freshStore();
    const { manifest, descriptor } = await resolveOciLayout(corrupt, { tag: 'v1' }, AMD64, await freshStore());
    const flip = async (digest: Digest): Promise<void> => {
      const file = path.join(corrupt, 'blobs', 'sha256', digest.slice(7));
      const bytes = await fs.readFile(file);
      bytes[bytes.length - 1] = (bytes[bytes.length - 1] ?? 0) ^ 0xff;
      await fs.writeFile(file, bytes);
    };
    const layer = manifest.layers[0];
    assert.ok(layer !== undefined);
    await flip(layer.digest);
    await assert.rejects(importLayoutBlob(corrupt, layer, store), isKilnError(ERROR_CODES.CONTENT, /did not match its descriptor.*it was not stored/));
    assert.equal(await store.has(layer.digest), false);

    await flip(descriptor.digest);
    await assert.rejects(resolveOciLayout(corrupt, { tag: 'v1' }, AMD64, store), isKilnError(ERROR_CODES.CONTENT, /did not match its descriptor/));
    assert.equal(await store.has(descriptor.digest), false);
    // An index inside the layout is checked as it is read.
    const corruptMulti = path.join(work, 'corrupt-multi');
    await fs.cp(multi, corruptMulti, { recursive: true });
    const indexFile = path.join(corruptMulti, 'blobs', 'sha256', multiIndex.digest.slice(7));
    const index = JSON.parse(await fs.readFile(indexFile, 'utf8')) as ImageIndex;
    await fs.writeFile(indexFile, JSON.stringify({ ...index, manifests: [...index.manifests].reverse() }).padEnd(multiIndex.size));
    await assert.rejects(
      resolveOciLayout(corruptMulti, { tag: '2.0' }, AMD64, store),
      isKilnError(ERROR_CODES.CONTENT, new RegExp(`blob ${multiIndex.digest} of OCI layout .* does not match its descriptor: got digest sha256:`)),
    );
  });

  it('refuses hostile blobs before reading them: symlinks, devices, fifos, sizes that do not match', async () => {
    const hostile = path.join(work, 'hostile');
    await fs.mkdir(path.join(hostile, 'blobs', 'sha256'), { recursive: true });
    const blob = (name: string): string => path.join(hostile, 'blobs', 'sha256', sha256(name).slice(7));
    const desc = (name: string, size: number): Descriptor => ({ mediaType: MEDIA_TYPES.ociLayerGzip, digest: sha256(name), size });
    const store = await freshStore();
    // A symlink to /dev/zero claiming 64 GiB would fill the disk if it were streamed.
    await fs.symlink('/dev/zero', blob('zero'));
    await assert.rejects(importLayoutBlob(hostile, desc('zero', 64 * 2 ** 30), store), isKilnError(ERROR_CODES.CONTENT, /is a symlink, not a regular file/));
    const outside = path.join(work, 'outside-file');
    await fs.writeFile(outside, 'outside');
    await fs.symlink(outside, blob('outside'));
    await assert.rejects(importLayoutBlob(hostile, desc('outside', 7), store), isKilnError(ERROR_CODES.CONTENT, /is a symlink/));
    await execa('mknod', [blob('device'), 'c', '1', '5']);
    await assert.rejects(importLayoutBlob(hostile, desc('device', 10), store), isKilnError(ERROR_CODES.CONTENT, /is not a regular file/));
    await execa('mkfifo', [blob('fifo')]);
    await assert.rejects(importLayoutBlob(hostile, desc('fifo', 10), store), isKilnError(ERROR_CODES.CONTENT, /is not a regular file/));
    await fs.writeFile(blob('short'), 'short');
    await assert.rejects(importLayoutBlob(hostile, desc('short', 2 ** 40), store), isKilnError(ERROR_CODES.CONTENT, /has 5 bytes, but its descriptor says 1099511627776/));
    // blobs/sha256 itself a symlink out of the layout.
    const escaped = path.join(work, 'hostile-dir');
    await fs.mkdir(path.join(escaped, 'blobs'), { recursive: true });
    await fs.symlink(path.join(hostile, 'blobs', 'sha256'), path.join(escaped, 'blobs', 'sha256'));
    await assert.rejects(importLayoutBlob(escaped, desc('short', 5), store), isKilnError(ERROR_CODES.CONTENT, /is outside the layout/));
    assert.equal(await store.has(sha256('short')), false);
  });

  it('refuses an image whose config does not list a diff_id per layer', async () => {
    const layer = await putBlob(multi, MEDIA_TYPES.ociLayer, 'one layer');
    const config = await putBlob(multi, MEDIA_TYPES.ociConfig, { ...AMD64, rootfs: { type: 'layers', diff_ids: [] } });
    const manifest = await putBlob(multi, MEDIA_TYPES.ociManifest, { schemaVersion: 2, config, layers: [layer] });
    await assert.rejects(
      resolveOciLayout(multi, { digest: manifest.digest }, AMD64, await freshStore()),
      isKilnError(ERROR_CODES.IMAGE, new RegExp(`config ${config.digest} has 0 diff_ids for the manifest's 1 layers$`)),
    );
  });

  it('stops an import on abort with the reason, storing nothing', async () => {
    const store = await freshStore();
    const reason = new Error('stop now');
    await assert.rejects(importLayoutBlob(multi, amdImage, store, AbortSignal.abort(reason)), (err: unknown) => err === reason);
    assert.equal(await store.has(amdImage.digest), false);
  });

  it('names a blob missing from the layout', async () => {
    const missing: Descriptor = { mediaType: MEDIA_TYPES.ociLayerGzip, digest: sha256('absent'), size: 6 };
    await assert.rejects(importLayoutBlob(multi, missing, await freshStore()), isKilnError(ERROR_CODES.CONTENT, new RegExp(`blob ${missing.digest} of OCI layout ${multi} is missing`)));
  });

  it('takes a lone tagged manifest that has no platform, and stores it as returned', async () => {
    const store = await freshStore();
    const resolved = await resolveOciLayout(multi, { tag: 'amd-only' }, AMD64, store);
    assert.deepEqual(await store.readJson<ImageManifest>(resolved.descriptor.digest), resolved.manifest);
    assert.equal(resolved.descriptor.digest, amdImage.digest);
  });
});
