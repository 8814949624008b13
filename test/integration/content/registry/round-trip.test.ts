/**
 * The registry client against a real registry (Debian's docker-registry):
 * push blobs, manifests and an index, resolve them back, mount across
 * repositories, and check that tampered content is refused. skopeo, which
 * nobody here wrote, confirms that what kiln pushed is a valid image.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { execa } from 'execa';
import { parseReference, type ImageReference } from '../../../../src/content/reference.js';
import { RegistryClient } from '../../../../src/content/registry/client.js';
import { ContentStore } from '../../../../src/content/store.js';
import { type Descriptor, type ImageIndex, type ImageManifest, type ImagePlatform, MEDIA_TYPES } from '../../../../src/content/types.js';
import { type Digest, sha256 } from '../../../../src/digest.js';
import { ERROR_CODES, KilnError } from '../../../../src/errors.js';
import type { LogFn, Logger } from '../../../../src/log.js';
import { startRegistry, type TestRegistry } from '../../../support/registry.js';

/** Asserts that `promise` rejects with a KilnError of `code` whose message matches. */
async function rejectsWith(promise: Promise<unknown>, code: string, message: RegExp | string): Promise<KilnError> {
  let caught: unknown;
  await promise.then(
    () => assert.fail('expected a rejection'),
    (err: unknown) => {
      caught = err;
    },
  );
  assert.ok(caught instanceof KilnError, String(caught));
  assert.equal(caught.code, code, caught.message);
  if (typeof message === 'string') assert.equal(caught.message, message);
  else assert.match(caught.message, message);
  return caught;
}

describe('RegistryClient against docker-registry', () => {
  let registry: TestRegistry;
  let dir: string;
  let store: ContentStore;
  let client: RegistryClient;
  let roots = 0;
  const ref = (name: string): ImageReference => parseReference(`${registry.host}/${name}`);
  /** An empty content store of its own. */
  const freshStore = (): ContentStore => new ContentStore(path.join(dir, `root-${roots++}`));
  const put = async (bytes: Uint8Array, mediaType: string): Promise<Descriptor> => {
    const info = await store.write(bytes);
    return { mediaType, digest: info.digest, size: info.size };
  };
  /** Stores a one-layer image for `platform` and returns its blobs and manifest bytes. */
  const makeImage = async (platform: ImagePlatform, layerSize = 1000): Promise<{ layer: Descriptor; config: Descriptor; manifest: Buffer }> => {
    const layer = await put(randomBytes(layerSize), MEDIA_TYPES.ociLayerGzip);
    const config = await put(
      Buffer.from(JSON.stringify({ ...platform, rootfs: { type: 'layers', diff_ids: [layer.digest] } })),
      MEDIA_TYPES.ociConfig,
    );
    const doc: ImageManifest = { schemaVersion: 2, mediaType: MEDIA_TYPES.ociManifest, config, layers: [layer] };
    return { layer, config, manifest: Buffer.from(JSON.stringify(doc)) };
  };
  const pushImage = async (target: ImageReference, platform: ImagePlatform, tag: string): Promise<{ layer: Descriptor; manifest: Descriptor }> => {
    const image = await makeImage(platform);
    assert.equal(await client.pushBlob(target, image.layer, store), 'uploaded');
    assert.equal(await client.pushBlob(target, image.config, store), 'uploaded');
    const digest = await client.pushManifest(target, tag, MEDIA_TYPES.ociManifest, image.manifest);
    return { layer: image.layer, manifest: { mediaType: MEDIA_TYPES.ociManifest, digest, size: image.manifest.length } };
  };
  const blobFile = (digest: string): string => {
    const hex = digest.slice('sha256:'.length);
    return path.join(registry.storage, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
  };

  before(async () => {
    registry = await startRegistry();
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-registry-test-'));
    store = freshStore();
    client = new RegistryClient({ insecureHosts: [registry.host], dockerConfig: path.join(dir, 'no-config.json') });
  });
  after(async () => {
    await registry.stop();
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('pushes an image, skips blobs the registry has, and resolves it by tag and by digest', async () => {
    const app = ref('app');
    const { layer, manifest } = await pushImage(app, { os: 'linux', architecture: 'amd64' }, '1.0');
    assert.equal(await client.pushBlob(app, layer, store), 'exists');
    assert.equal(await client.hasBlob(app, layer.digest), true);
    assert.equal(await client.hasBlob(app, sha256('absent')), false);

    const byTag = await client.resolve(ref('app:1.0'), { platform: { os: 'linux', architecture: 'amd64' } });
    assert.deepEqual(byTag.top, manifest);
    assert.deepEqual(byTag.descriptor, manifest);
    assert.equal(sha256(byTag.bytes), manifest.digest);
    assert.deepEqual(byTag.topBytes, byTag.bytes);
    assert.deepEqual(byTag.manifest.layers, [layer]);

    const byDigest = await client.resolve(ref(`app@${manifest.digest}`), { platform: { os: 'linux', architecture: 'amd64' } });
    assert.deepEqual(byDigest.descriptor, manifest);
    assert.deepEqual(await client.headManifest(app, '1.0'), manifest);

    const other = freshStore();
    await client.fetchBlob(app, layer, other);
    assert.deepEqual(await other.readBytes(layer.digest), await store.readBytes(layer.digest));

    const { stdout } = await execa('skopeo', ['inspect', '--tls-verify=false', '--raw', `docker://${registry.host}/app:1.0`]);
    assert.equal(sha256(stdout), manifest.digest);
  });

  it('selects the manifest for a platform from an index, and lists the platforms when none fits', async () => {
    const multi = ref('multi');
    const amd64 = await pushImage(multi, { os: 'linux', architecture: 'amd64' }, 'amd64');
    const arm64 = await pushImage(multi, { os: 'linux', architecture: 'arm64' }, 'arm64');
    const index: ImageIndex = {
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociIndex,
      manifests: [
        { ...amd64.manifest, platform: { os: 'linux', architecture: 'amd64' } },
        { ...arm64.manifest, platform: { os: 'linux', architecture: 'arm64' } },
      ],
    };
    const indexBytes = Buffer.from(JSON.stringify(index));
    const indexDigest = await client.pushManifest(multi, 'latest', MEDIA_TYPES.ociIndex, indexBytes);

    const resolved = await client.resolve(ref('multi'), { platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } });
    assert.deepEqual(resolved.top, { mediaType: MEDIA_TYPES.ociIndex, digest: indexDigest, size: indexBytes.length });
    assert.deepEqual(resolved.topBytes, indexBytes);
    assert.deepEqual(resolved.descriptor, index.manifests[1]);
    assert.deepEqual(resolved.manifest.layers, [arm64.layer]);
    const amd = await client.resolve(ref(`multi@${indexDigest}`), { platform: { os: 'linux', architecture: 'amd64' } });
    assert.deepEqual(amd.manifest.layers, [amd64.layer]);

    await rejectsWith(
      client.resolve(ref('multi'), { platform: { os: 'linux', architecture: 's390x' } }),
      ERROR_CODES.IMAGE,
      `${registry.host}/multi:latest: no manifest for platform linux/s390x; the index has linux/amd64, linux/arm64`,
    );
    // skopeo reads the index kiln pushed and picks the arm64 image (its config says so) from it.
    const { stdout } = await execa('skopeo', ['inspect', '--tls-verify=false', '--override-arch', 'arm64', `docker://${registry.host}/multi:latest`]);
    const inspected = JSON.parse(stdout) as { Digest: string; Architecture: string; Layers: string[] };
    assert.deepEqual([inspected.Digest, inspected.Architecture, inspected.Layers], [indexDigest, 'arm64', [arm64.layer.digest]]);
  });

  it('mounts a blob from another repository instead of uploading it, and uploads when the source lacks it', async () => {
    const source = ref('mount-source');
    const { layer } = await pushImage(source, { os: 'linux', architecture: 'amd64' }, 'v1');
    const target = ref('mount-target');
    assert.equal(await client.hasBlob(target, layer.digest), false);
    assert.equal(await client.pushBlob(target, layer, store, { mountFrom: source }), 'mounted');
    assert.equal(await client.hasBlob(target, layer.digest), true);

    const fresh = await put(randomBytes(500), MEDIA_TYPES.ociLayerGzip);
    assert.equal(await client.pushBlob(target, fresh, store, { mountFrom: source }), 'uploaded');
    assert.equal(await client.hasBlob(target, fresh.digest), true);
  });

  it('uploads large blobs in chunks', async () => {
    const methods: string[] = [];
    const none: LogFn = () => {};
    const logger: Logger = { error: none, warn: none, info: none, debug: none, trace: (fields) => methods.push((fields as { method: string }).method) };
    const chunked = new RegistryClient({ insecureHosts: [registry.host], dockerConfig: path.join(dir, 'no-config.json'), uploadChunkSize: 64 * 1024, logger });
    const big = await put(randomBytes(200 * 1024 + 7), MEDIA_TYPES.ociLayerGzip);
    assert.equal(await chunked.pushBlob(ref('chunked'), big, store), 'uploaded');
    assert.deepEqual(methods, ['HEAD', 'POST', 'PATCH', 'PATCH', 'PATCH', 'PATCH', 'PUT']);
    const back = freshStore();
    await chunked.fetchBlob(ref('chunked'), big, back);
    assert.deepEqual(await back.readBytes(big.digest), await store.readBytes(big.digest));
  });

  it('a streamed upload keeps none of the bytes it has sent, and the registry stores them under their digest', async () => {
    // Collected garbage only: what is still held after a full collection is what the upload keeps.
    setFlagsFromString('--expose-gc');
    const collect = runInNewContext('gc') as () => void;
    const chunk = randomBytes(1024 * 1024);
    const hash = createHash('sha256');
    const upload = await client.startUpload(ref('streamed'));
    const heldBefore = (collect(), process.memoryUsage().arrayBuffers);
    let heldMost = 0;
    for (let i = 0; i < 256; i++) {
      // A new buffer each time, as a compressor makes them.
      const bytes = Buffer.from(chunk);
      hash.update(bytes);
      await upload.write(bytes);
      if (i % 32 === 31) heldMost = Math.max(heldMost, (collect(), process.memoryUsage().arrayBuffers) - heldBefore);
    }
    const digest = `sha256:${hash.digest('hex')}` as Digest;
    await upload.finish(digest);
    // undici kept every chunk of a body it might resend to a redirect: 256 MiB here.
    assert.ok(heldMost < 64 * 1024 * 1024, `${Math.round(heldMost / 1024 / 1024)} MiB of the 256 MiB sent were still held`);
    assert.equal((await fs.stat(blobFile(digest))).size, 256 * 1024 * 1024);
  });

  it('names the reference when the registry has no such manifest or blob', async () => {
    await pushImage(ref('known'), { os: 'linux', architecture: 'amd64' }, 'v1');
    const nope = client.resolve(ref('known:nope'), { platform: { os: 'linux', architecture: 'amd64' } });
    await rejectsWith(nope, ERROR_CODES.REGISTRY, `${registry.host}/known:nope: manifest unknown (404)`);
    const missing = { mediaType: MEDIA_TYPES.ociLayerGzip, digest: sha256('missing'), size: 7 };
    const blob = client.fetchBlob(ref('known'), missing, freshStore());
    await rejectsWith(blob, ERROR_CODES.REGISTRY, `${registry.host}/known@${missing.digest}: blob unknown to registry (404)`);
    await rejectsWith(client.pushBlob(ref('known'), missing, store), ERROR_CODES.CONTENT, /not in kiln's content store/);
  });

  it('refuses content that does not match its digest, and stores none of it', async () => {
    const app = ref('tampered');
    const { layer, manifest } = await pushImage(app, { os: 'linux', architecture: 'amd64' }, 'v1');
    const original = await fs.readFile(blobFile(layer.digest));
    await fs.writeFile(blobFile(layer.digest), Buffer.from(original.map((b) => b ^ 0xff)));
    const target = freshStore();
    await rejectsWith(client.fetchBlob(app, layer, target), ERROR_CODES.CONTENT, /did not match its descriptor: got digest/);
    assert.equal(await target.has(layer.digest), false);
    await rejectsWith(client.fetchBlob(app, { ...layer, size: layer.size + 1 }, target), ERROR_CODES.CONTENT, /sent 1000 bytes, not the 1001/);

    const manifestBytes = await fs.readFile(blobFile(manifest.digest));
    await fs.writeFile(blobFile(manifest.digest), manifestBytes.toString('utf8').replace('"schemaVersion":2', '"schemaVersion":2 '));
    await rejectsWith(client.resolve(ref('tampered:v1'), { platform: { os: 'linux', architecture: 'amd64' } }), ERROR_CODES.CONTENT, /hashes to sha256:\w+, not sha256:/);
    await rejectsWith(client.fetchManifest(app, manifest.digest), ERROR_CODES.CONTENT, new RegExp(`tampered@${manifest.digest}: the manifest served hashes to`));
  });
});

describe('RegistryClient with basic auth (htpasswd)', () => {
  let registry: TestRegistry;
  let dir: string;
  before(async () => {
    registry = await startRegistry({ htpasswd: { user: 'kiln', password: 's3cret' } });
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-registry-auth-'));
  });
  after(async () => {
    await registry.stop();
    await fs.rm(dir, { recursive: true, force: true });
  });
  const clientWith = async (name: string, auths: Record<string, unknown>): Promise<{ client: RegistryClient; config: string }> => {
    const config = path.join(dir, `${name}.json`);
    await fs.writeFile(config, JSON.stringify({ auths }));
    return { client: new RegistryClient({ insecureHosts: [registry.host], dockerConfig: config }), config };
  };

  it('pushes and pulls with the credentials of config.json', async () => {
    const { client } = await clientWith('good', { [`http://${registry.host}`]: { auth: Buffer.from('kiln:s3cret').toString('base64') } });
    const store = new ContentStore(path.join(dir, 'root'));
    const layer = await store.write(Buffer.from('layer bytes'));
    const desc = { mediaType: MEDIA_TYPES.ociLayer, ...layer };
    const target = parseReference(`${registry.host}/private/app`);
    assert.equal(await client.pushBlob(target, desc, store), 'uploaded');
    assert.equal(await client.hasBlob(target, desc.digest), true);
    const back = new ContentStore(path.join(dir, 'root-back'));
    await client.fetchBlob(target, desc, back);
    assert.equal(await back.has(desc.digest), true);
  });

  it('says where credentials go when there are none, and that they were refused when wrong', async () => {
    const target = parseReference(`${registry.host}/private/app:1`);
    const none = await clientWith('none', {});
    await rejectsWith(
      none.client.fetchManifest(target, '1'),
      ERROR_CODES.REGISTRY,
      `${registry.host}/private/app:1: authentication required (401): the repository may not exist, or it needs credentials: add them for ${registry.host} to ${none.config}`,
    );
    const wrong = await clientWith('wrong', { [registry.host]: { username: 'kiln', password: 'nope' } });
    const refused = new RegExp(`\\(401\\): the credentials for ${registry.host} in .*wrong\\.json were refused`);
    await rejectsWith(wrong.client.fetchManifest(target, '1'), ERROR_CODES.REGISTRY, refused);
  });
});
