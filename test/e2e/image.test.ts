/**
 * Images end to end, checked with tools nobody here wrote: build the busybox
 * example as an image and push it to a real registry (Debian's
 * docker-registry), build FROM it with a step that adds and deletes files,
 * export oci and docker tarballs, and read everything back with skopeo and
 * umoci.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { access, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { startRegistry } from '../support/registry.js';
import { errorLine, EXAMPLES, kiln, removeDir, tempDir, verticesByName } from './harness.js';

const BUSYBOX = join(EXAMPLES, 'busybox.json');

interface SkopeoInspect {
  readonly Digest: string;
  readonly Layers: readonly string[];
  readonly Env?: readonly string[];
  readonly Labels?: Readonly<Record<string, string>> | null;
}

async function skopeo(args: readonly string[]): Promise<string> {
  const r = await execa('skopeo', [...args], { reject: false });
  assert.equal(r.exitCode, 0, `skopeo ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

async function inspect(target: string): Promise<SkopeoInspect> {
  return JSON.parse(await skopeo(['inspect', '--tls-verify=false', target])) as SkopeoInspect;
}

/** A definition FROM `image` that adds /hello, deletes /bin/ls, and sets config. */
function derived(image: string): object {
  return {
    version: 1,
    ops: {
      base: { source: { identifier: `docker-image://${image}` } },
      step: {
        inputs: ['base'],
        exec: {
          meta: { args: ['/bin/sh', '-c', 'echo hello > /hello && rm /bin/ls && mkdir -p /data && echo kept > /data/kept'] },
          mounts: [{ dest: '/', input: 0, output: 0 }],
        },
      },
    },
    result: 'step',
    image: { base: 'base', config: { env: ['GREETING=hi'], cmd: ['/bin/sh'], workingDir: '/data', labels: { 'org.example.test': 'yes' } } },
  };
}

/** A definition FROM `image` (with `mode` as image.resolvemode) whose step is never cached from another build (`tag` differs). */
function fromImage(image: string, tag: string, mode?: string): object {
  return {
    version: 1,
    ops: {
      base: { source: { identifier: `docker-image://${image}`, ...(mode === undefined ? {} : { attrs: { 'image.resolvemode': mode } }) } },
      step: { inputs: ['base'], exec: { meta: { args: ['/bin/sh', '-c', `test -f /hello && echo ${tag} > /tag`] }, mounts: [{ dest: '/', input: 0, output: 0 }] } },
    },
    result: 'step',
  };
}

/** A local port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((res) => server.close(() => res()));
  return port;
}

async function exists(p: string): Promise<boolean> {
  return access(p).then(
    () => true,
    () => false,
  );
}

describe('images: registry round trip, oci and docker tarballs', () => {
  let work: string;
  let root: string;
  let registry: Awaited<ReturnType<typeof startRegistry>>;
  let baseRef: string;

  before(async () => {
    work = await tempDir('image');
    root = join(work, 'root');
    registry = await startRegistry();
    baseRef = `${registry.host}/kiln/busybox:1`;
  });
  after(async () => {
    await registry?.stop();
    await removeDir(work);
  });

  test('busybox.json pushed as an image is what skopeo sees in the registry', async () => {
    const r = await kiln(['build', BUSYBOX, '--root', root, '--local', 'tools=/bin', '--output', `type=image,name=${baseRef},push=true,registry.insecure=true`]);
    assert.equal(r.exitCode, 0, r.stderr);
    const info = await inspect(`docker://${baseRef}`);
    assert.ok(info.Layers.length >= 1);
    assert.match(info.Digest, /^sha256:[0-9a-f]{64}$/);
  });

  test('two processes pulling the same image into one root unpack each layer once', async () => {
    const shared = join(work, 'root-shared');
    const file = join(work, 'just-base.json');
    await writeFile(file, JSON.stringify({ version: 1, ops: { base: { source: { identifier: `docker-image://${baseRef}` } } }, result: 'base' }));
    const builds = ['a', 'b', 'c'].map((n) => kiln(['build', file, '--root', shared, '--insecure-registry', registry.host, '--output', `type=local,dest=${join(work, `pulled-${n}`)}`]));
    for (const r of await Promise.all(builds)) assert.equal(r.exitCode, 0, r.stderr);
    const layers = (await inspect(`docker://${baseRef}`)).Layers.length;
    // One snapshot per layer: the processes that lost the race took the winner's (none unpacked its own copy).
    const snapshotters = await readdir(join(shared, 'snapshots'));
    assert.equal(snapshotters.length, 1);
    // (`empty` is the overlayfs snapshotter's shared empty lower directory.)
    const snapshots = (await readdir(join(shared, 'snapshots', snapshotters[0] as string))).filter((name) => name !== 'empty');
    assert.equal(snapshots.length, layers, `${String(layers)} layers, snapshots: ${snapshots.join(', ')}`);
    for (const n of ['a', 'b', 'c']) assert.ok(await exists(join(work, `pulled-${n}`, 'bin', 'busybox')));
  });

  test('FROM the pushed image: oci and docker tarballs that skopeo and umoci read, whiteouts applied', async () => {
    const file = join(work, 'derived.json');
    await writeFile(file, JSON.stringify(derived(baseRef)));
    const oci = join(work, 'out-oci.tar');
    const docker = join(work, 'out-docker.tar');
    const r = await kiln([
      'build', file, '--root', join(work, 'root2'), '--insecure-registry', registry.host, '--progress', 'rawjson',
      '--output', `type=oci,dest=${oci},name=example.com/derived:v1`,
      '--output', `type=docker,dest=${docker},name=example.com/derived:v1`,
    ]);
    assert.equal(r.exitCode, 0, r.stderr);

    const base = await inspect(`docker://${baseRef}`);
    const fromOci = await inspect(`oci-archive:${oci}`);
    // The base's layers are reused as they are (same digests), one new layer on top.
    assert.deepEqual(fromOci.Layers.slice(0, base.Layers.length), base.Layers);
    assert.equal(fromOci.Layers.length, base.Layers.length + 1);
    assert.ok(fromOci.Env?.includes('GREETING=hi'));
    assert.equal(fromOci.Labels?.['org.example.test'], 'yes');

    // skopeo finds the image in the docker archive by the name it was given.
    const fromDocker = await inspect(`docker-archive:${docker}:example.com/derived:v1`);
    assert.equal(fromDocker.Layers.length, fromOci.Layers.length);
    const { stdout: manifestJson } = await execa('tar', ['-xOf', docker, 'manifest.json']);
    const [entry] = JSON.parse(manifestJson) as { RepoTags: string[]; Layers: string[] }[];
    assert.deepEqual(entry?.RepoTags, ['example.com/derived:v1']);

    // umoci unpacks the OCI layout: the new files are there, the deleted one is not.
    const layout = join(work, 'layout');
    await mkdir(layout);
    await execa('tar', ['-xf', oci, '-C', layout]);
    const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as { manifests: { annotations?: Record<string, string> }[] };
    const tag = index.manifests[0]?.annotations?.['org.opencontainers.image.ref.name'];
    assert.ok(tag !== undefined, 'index.json names the image');
    const bundle = join(work, 'bundle');
    const u = await execa('umoci', ['unpack', '--image', `${layout}:${tag}`, bundle], { reject: false });
    assert.equal(u.exitCode, 0, u.stderr);
    const rootfs = join(bundle, 'rootfs');
    assert.equal(await readFile(join(rootfs, 'hello'), 'utf8'), 'hello\n');
    assert.equal(await readFile(join(rootfs, 'data', 'kept'), 'utf8'), 'kept\n');
    assert.ok(await exists(join(rootfs, 'bin', 'busybox')), 'base layer files are there');
    assert.ok(!(await exists(join(rootfs, 'bin', 'ls'))), '/bin/ls was deleted by the step: its whiteout must hide it');

    // skopeo copies the tarball into the registry, and the registry serves the same image.
    await skopeo(['copy', '--dest-tls-verify=false', `oci-archive:${oci}`, `docker://${registry.host}/kiln/derived:copied`]);
    const copied = await inspect(`docker://${registry.host}/kiln/derived:copied`);
    assert.deepEqual(copied.Layers, fromOci.Layers);
  });

  test('several names in name=, as buildctl takes them: every tag in the tarballs and the registry; a bad one is refused first', async () => {
    const file = join(work, 'derived-names.json');
    await writeFile(file, JSON.stringify(derived(baseRef)));
    const oci = join(work, 'names-oci.tar');
    const docker = join(work, 'names-docker.tar');
    const names = `${registry.host}/kiln/multi:1.0,${registry.host}/kiln/multi:latest,${registry.host}/kiln/other:x`;
    const metadata = join(work, 'names-metadata.json');
    const r = await kiln([
      'build', file, '--root', join(work, 'root-names'), '--insecure-registry', registry.host, '--progress', 'plain', '--metadata-file', metadata,
      '--output', 'type=oci,dest=' + oci + ',"name=example.com/app:1,example.com/app:2"',
      '--output', 'type=docker,dest=' + docker + ',"name=example.com/app:1,example.com/app:2"',
      '--output', `type=image,"name=${names}",push=true,registry.insecure=true`,
    ]);
    assert.equal(r.exitCode, 0, r.stderr);
    const { stdout: manifestJson } = await execa('tar', ['-xOf', docker, 'manifest.json']);
    const entries = JSON.parse(manifestJson) as { RepoTags: string[] }[];
    assert.deepEqual(entries.map((e) => e.RepoTags), [['example.com/app:1', 'example.com/app:2']], 'one image, both tags');
    const { stdout: indexJson } = await execa('tar', ['-xOf', oci, 'index.json']);
    const index = JSON.parse(indexJson) as { manifests: { digest: string; annotations?: Record<string, string> }[] };
    assert.deepEqual(index.manifests.map((m) => m.annotations?.['io.containerd.image.name']), ['example.com/app:1', 'example.com/app:2']);
    assert.equal(new Set(index.manifests.map((m) => m.digest)).size, 1);
    const pushed = JSON.parse(await readFile(metadata, 'utf8')) as Record<string, string>;
    for (const ref of names.split(',')) assert.equal((await inspect(`docker://${ref}`)).Digest, pushed['containerimage.digest'], ref);

    const bad = await kiln(['build', file, '--root', join(work, 'root-names'), '--output', `type=image,"name=${registry.host}/kiln/multi:ok,Bad Name"`]);
    assert.equal(bad.exitCode, 2);
    assert.match(bad.stderr, /^error: --output .*: image name "Bad Name": /m);
    assert.doesNotMatch(bad.stderr, /^#\d/m, 'refused before anything ran');
  });

  test('oci-layout:// source: FROM the layout umoci read, by tag and by digest', async () => {
    const layout = join(work, 'layout');
    const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string; annotations?: Record<string, string> }[] };
    const entry = index.manifests[0];
    assert.ok(entry !== undefined);
    const tag = entry.annotations?.['org.opencontainers.image.ref.name'] ?? 'latest';
    for (const identifier of [`oci-layout://app:${tag}`, `oci-layout://app@${entry.digest}`]) {
      const file = join(work, 'from-layout.json');
      await writeFile(
        file,
        JSON.stringify({
          version: 1,
          ops: {
            base: { source: { identifier } },
            check: { inputs: ['base'], exec: { meta: { args: ['/bin/sh', '-c', 'test -f /hello && ! test -e /bin/ls && echo ok > /checked'] }, mounts: [{ dest: '/', input: 0, output: 0 }] } },
          },
          result: 'check',
        }),
      );
      const out = join(work, `from-layout-${identifier.includes('@') ? 'digest' : 'tag'}`);
      const r = await kiln(['build', file, '--root', root, '--oci-layout', `app=${layout}`, '--output', `type=local,dest=${out}`]);
      assert.equal(r.exitCode, 0, r.stderr);
      assert.equal(await readFile(join(out, 'checked'), 'utf8'), 'ok\n');
    }
    // image.layerlimit keeps the base's layers only: the step's /hello is not there.
    const limited = join(work, 'limited.json');
    await writeFile(
      limited,
      JSON.stringify({ version: 1, ops: { base: { source: { identifier: `docker-image://${registry.host}/kiln/derived:copied`, attrs: { 'image.layerlimit': '1' } } } }, result: 'base' }),
    );
    const limitedOut = join(work, 'limited-out');
    const l = await kiln(['build', limited, '--root', root, '--insecure-registry', registry.host, '--output', `type=local,dest=${limitedOut}`]);
    assert.equal(l.exitCode, 0, l.stderr);
    assert.ok(!(await exists(join(limitedOut, 'hello'))), 'the last layer is left out');
    assert.ok(await exists(join(limitedOut, 'bin')), 'the first layer is there');

    const unbound = await kiln(['build', join(work, 'from-layout.json'), '--root', root]);
    assert.equal(unbound.exitCode, 1);
    assert.match(unbound.stderr, /--oci-layout app=DIR/);
  });

  test('on the native snapshotter: layers found by comparing trees, whiteouts included', async () => {
    const oci = join(work, 'native.tar');
    const r = await kiln(['build', join(work, 'derived.json'), '--root', join(work, 'native-root'), '--snapshotter', 'native', '--insecure-registry', registry.host, '--output', `type=oci,dest=${oci},name=native:1`]);
    assert.equal(r.exitCode, 0, r.stderr);
    const base = await inspect(`docker://${baseRef}`);
    const image = await inspect(`oci-archive:${oci}`);
    assert.deepEqual(image.Layers.slice(0, base.Layers.length), base.Layers, 'base layers reused on native too');
    const layout = join(work, 'native-layout');
    await mkdir(layout);
    await execa('tar', ['-xf', oci, '-C', layout]);
    const bundle = join(work, 'native-bundle');
    const u = await execa('umoci', ['unpack', '--image', `${layout}:1`, bundle], { reject: false });
    assert.equal(u.exitCode, 0, u.stderr);
    assert.equal(await readFile(join(bundle, 'rootfs', 'hello'), 'utf8'), 'hello\n');
    assert.ok(!(await exists(join(bundle, 'rootfs', 'bin', 'ls'))), 'the deleted file is whited out');
    assert.ok(await exists(join(bundle, 'rootfs', 'bin', 'busybox')));
  });

  test('a second build of the same image is fully cached and gives the same layers', async () => {
    const file = join(work, 'derived.json');
    const oci = join(work, 'again.tar');
    const r = await kiln(['build', file, '--root', join(work, 'root2'), '--insecure-registry', registry.host, '--progress', 'rawjson', '--output', `type=oci,dest=${oci}`]);
    assert.equal(r.exitCode, 0, r.stderr);
    for (const v of verticesByName(r.stderr).values()) assert.ok(v.cached, `${v.name} is cached`);
    const first = await inspect(`oci-archive:${join(work, 'out-oci.tar')}`);
    const again = await inspect(`oci-archive:${oci}`);
    assert.deepEqual(again.Layers, first.Layers);
  });

  test('SOURCE_DATE_EPOCH: two clean builds give byte-identical images', async () => {
    const file = join(work, 'derived.json');
    const digests: string[] = [];
    for (const n of [1, 2]) {
      const oci = join(work, `epoch${n}.tar`);
      const r = await kiln(['build', file, '--root', join(work, `epoch-root${n}`), '--insecure-registry', registry.host, '--output', `type=oci,dest=${oci}`], {
        env: { SOURCE_DATE_EPOCH: '1700000000' },
      });
      assert.equal(r.exitCode, 0, r.stderr);
      digests.push((await inspect(`oci-archive:${oci}`)).Digest);
      // Let file times differ between the two builds.
      await new Promise((res) => setTimeout(res, 1100));
    }
    assert.equal(digests[0], digests[1]);
  });

  test('resolve modes: default uses the stored manifest with the registry gone, pull asks it, local never does', async () => {
    const own = await startRegistry();
    const image = `${own.host}/kiln/modes:1`;
    const modesRoot = join(work, 'modes-root');
    try {
      await skopeo(['copy', '--dest-tls-verify=false', `oci-archive:${join(work, 'out-oci.tar')}`, `docker://${image}`]);
      const pulled = await kiln(['build', '-', '--root', modesRoot, '--insecure-registry', own.host], { input: JSON.stringify(fromImage(image, 'first')) });
      assert.equal(pulled.exitCode, 0, pulled.stderr);
    } finally {
      await own.stop();
    }
    for (const mode of ['default', 'local']) {
      const r = await kiln(['build', '-', '--root', modesRoot, '--insecure-registry', own.host], { input: JSON.stringify(fromImage(image, mode, mode)) });
      assert.equal(r.exitCode, 0, `${mode}: ${r.stderr}`);
    }
    const pull = await kiln(['build', '-', '--root', modesRoot, '--insecure-registry', own.host], { input: JSON.stringify(fromImage(image, 'pull', 'pull')) });
    assert.equal(pull.exitCode, 1, 'pull asks the registry, which is gone');
    assert.match(pull.stderr, /unreachable/);
  });

  test('errors name the reference: unknown tag, unreachable registry, local mode without a pull', async () => {
    const missing = join(work, 'missing.json');
    await writeFile(missing, JSON.stringify({ version: 1, ops: { base: { source: { identifier: `docker-image://${registry.host}/kiln/nope:1` } } }, result: 'base' }));
    const r = await kiln(['build', missing, '--root', root, '--insecure-registry', registry.host]);
    assert.equal(r.exitCode, 1);
    const last = errorLine(r.stderr);
    assert.match(last, /^error: .*kiln\/nope:1: manifest unknown \(404\)$/, r.stderr);

    const closed = `127.0.0.1:${await closedPort()}`;
    const unreachable = join(work, 'unreachable.json');
    await writeFile(unreachable, JSON.stringify({ version: 1, ops: { base: { source: { identifier: `docker-image://${closed}/kiln/x:1` } } }, result: 'base' }));
    const u = await kiln(['build', unreachable, '--root', root, '--insecure-registry', closed]);
    assert.equal(u.exitCode, 1);
    assert.match(errorLine(u.stderr), new RegExp(`${closed}.*unreachable`), u.stderr);

    const local = join(work, 'local.json');
    await writeFile(local, JSON.stringify({ version: 1, ops: { base: { source: { identifier: `docker-image://${registry.host}/kiln/other:1`, attrs: { 'image.resolvemode': 'local' } } } }, result: 'base' }));
    const l = await kiln(['build', local, '--root', root]);
    assert.equal(l.exitCode, 1);
    assert.match(l.stderr, /resolvemode=local/);
  });
});
