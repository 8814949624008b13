/**
 * What the layers of an image hold, compared with what BuildKit's hold: only
 * what each step changed. A step that changes nothing gives a layer of the
 * system mount points its base lacked (/proc, /dev, /sys, which BuildKit
 * leaves too) and nothing of /etc, where the runtime's /etc/hosts stub was; a
 * hardlink to a file of a lower layer is a file of its own, and the lower
 * layer's pair stays as it was. Built through the CLI on each worker (runc,
 * and containerd against a private one), on the overlayfs and the native
 * snapshotter, exported as an OCI tarball and read back with tar.
 */
import assert from 'node:assert/strict';
import { copyFile, link, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { kiln, removeDir, tempDir } from './harness.js';
import { WORKERS, workerSuite } from './workers.js';

interface OciIndex {
  readonly manifests: readonly { readonly digest: string }[];
}
interface OciManifest {
  readonly config: { readonly digest: string };
  readonly layers: readonly { readonly digest: string }[];
}

/** `type name` of every entry of every layer of the one image in an OCI tarball, layer by layer. */
async function layerEntries(tarball: string): Promise<string[][]> {
  const layout = await tempDir('layers-layout');
  try {
    await execa('tar', ['-xf', tarball, '-C', layout]);
    const blob = (digest: string) => join(layout, 'blobs', ...digest.split(':'));
    const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as OciIndex;
    const manifest = JSON.parse(await readFile(blob(index.manifests[0]?.digest ?? ''), 'utf8')) as OciManifest;
    const layers: string[][] = [];
    for (const layer of manifest.layers) {
      const { stdout } = await execa('tar', ['-tvzf', blob(layer.digest)]);
      // `-rwxr-xr-x 0/0 1024 2024-01-01 00:00 bin/busybox`: the type letter and the name (and a link's target).
      layers.push(stdout.split('\n').filter((l) => l !== '').map((l) => `${l[0] ?? '?'} ${l.split(/\s+/).slice(5).join(' ')}`));
    }
    return layers;
  } finally {
    await removeDir(layout);
  }
}

for (const workerId of WORKERS) {
describe(`layers hold only what each step changed, as BuildKit's do, on the ${workerId} worker`, () => {
  const suite = workerSuite(workerId, 'layers');
  let work: string;
  let context: string;
  before(async () => {
    work = await tempDir('layers');
    context = join(work, 'context');
    // A base with a hardlink pair in one layer, and an /etc without hosts or resolv.conf.
    await mkdir(join(context, 'bin'), { recursive: true });
    await mkdir(join(context, 'etc'));
    await writeFile(join(context, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\n');
    await copyFile('/bin/busybox', join(context, 'bin/busybox'));
    await link(join(context, 'bin/busybox'), join(context, 'bin/pair'));
  });
  after(async () => removeDir(work));

  const step = (input: string, args: readonly string[]) => ({
    inputs: [input],
    exec: { meta: { args: ['/bin/busybox', ...args] }, mounts: [{ dest: '/', input: 0, output: 0 }] },
  });
  const definition = {
    version: 1,
    ops: {
      context: { source: { identifier: 'local://context' } },
      base: { inputs: ['context'], file: { actions: [{ input: -1, secondaryInput: 0, output: 0, copy: { src: '/', dest: '/', dirCopyContents: true } }] } },
      // Changes nothing but for the runtime's mount points: /proc, /dev and /sys stay (as in
      // BuildKit's layers), the stubs of /etc/hosts and /etc/resolv.conf go.
      noop: step('base', ['true']),
      // A new name for a file of the base: overlayfs copies the file up to link it.
      linked: step('noop', ['ln', '/bin/busybox', '/bin/newname']),
    },
    result: 'linked',
  };

  for (const snapshotter of ['overlayfs', 'native']) {
    test(`on ${snapshotter}: a no-op step adds nothing, a new hardlink is a file of its own`, async () => {
      const file = join(work, 'layers.json');
      await writeFile(file, JSON.stringify(definition));
      const oci = join(work, `${snapshotter}.tar`);
      const r = await kiln([
        'build', file, '--root', join(work, `root-${snapshotter}`), '--snapshotter', snapshotter,
        '--local', `context=${context}`, '--output', `type=oci,dest=${oci},name=layers:1`, ...suite.workerArgs('build'),
      ]);
      assert.equal(r.exitCode, 0, r.stderr);
      const layers = await layerEntries(oci);
      assert.deepEqual(layers[0], ['d bin/', '- bin/busybox', 'h bin/pair link to bin/busybox', 'd etc/', '- etc/passwd'], 'the base layer holds its pair');
      assert.deepEqual(layers.slice(1), [['d dev/', 'd proc/', 'd sys/'], ['d bin/', '- bin/newname']], JSON.stringify(layers));
    });
  }
});
}
