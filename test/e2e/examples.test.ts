/**
 * The example programs of examples/, run as a reader would run them (node,
 * from the repository: `import 'kiln'` resolves to this package by its own
 * name), each checked for what it says it does.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { startRegistry, type TestRegistry } from '../support/registry.js';
import { REPO, removeDir, tempDir } from './harness.js';

describe('examples/', () => {
  let work: string;
  let registry: TestRegistry;
  before(async () => {
    work = await tempDir('examples');
    registry = await startRegistry();
  });
  after(async () => {
    await registry.stop();
    await removeDir(work);
  });

  const example = (file: string, args: readonly string[]) =>
    execa(process.execPath, [join(REPO, 'examples', file), ...args], { reject: false, stdin: 'ignore', env: { KILN_ROOT: join(work, 'root') }, timeout: 120_000 });

  test('build-rootfs.mjs writes a busybox rootfs with the file its command wrote', async () => {
    const out = join(work, 'rootfs');
    const r = await example('build-rootfs.mjs', [out]);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, `rootfs written to ${out}`);
    assert.match(await readFile(join(out, 'etc', 'motd'), 'utf8'), /^built by kiln on \S+\n$/);
    const usage = await example('build-rootfs.mjs', []);
    assert.equal(usage.exitCode, 2);
  });

  test('push-image.mjs pushes to the registry given and prints the digest the registry serves', async () => {
    const name = `${registry.host}/examples/hello:v1`;
    const r = await example('push-image.mjs', [name, '--insecure']);
    assert.equal(r.exitCode, 0, r.stderr);
    const digest = /^pushed \S+ (sha256:[0-9a-f]{64})$/.exec(r.stdout)?.[1];
    assert.ok(digest !== undefined, r.stdout);
    const response = await fetch(`http://${registry.host}/v2/examples/hello/manifests/v1`, { method: 'HEAD', headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
    assert.equal(response.headers.get('docker-content-digest'), digest);
  });

  test('progress-consumer.mjs prints a line per step from the typed events, and the slowest steps', async () => {
    const r = await example('progress-consumer.mjs', []);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.match(r.stdout, /^step "count to five" ran in \d+ ms, 5 lines of output$/m);
    assert.match(r.stdout, /^step "busybox --install -s \/bin" (cached|ran) in \d+ ms/m);
    assert.match(r.stdout, /^slowest steps:\n( +\d+ ms {2}.+\n?){3}$/m);
  });
});
