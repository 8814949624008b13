/**
 * Storage end to end: what `kiln du` reports after a registry pull and an
 * image export (and that it matches `du -sb` of the root), `kiln images`,
 * an image kept by name used as a build's base with resolvemode=local,
 * `kiln prune --all` leaving in ROOT/content only what is in use, a build
 * that pulls and exports while prunes run, and `--no-cache`.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startRegistry } from '../support/registry.js';
import { EXAMPLES, kiln, removeDir, startKiln, tempDir, verticesByName } from './harness.js';

const BUSYBOX = join(EXAMPLES, 'busybox.json');

/** A definition FROM `image` whose step writes a fresh uuid to /stamp (and `tag` to /tag). */
function stamped(image: string, tag: string, attrs: Record<string, string> = {}, sleep = 0): object {
  return {
    version: 1,
    ops: {
      base: { source: { identifier: `docker-image://${image}`, attrs } },
      step: {
        inputs: ['base'],
        exec: {
          meta: { args: ['/bin/sh', '-c', `sleep ${sleep}; cat /proc/sys/kernel/random/uuid > /stamp; echo ${tag} > /tag`] },
          mounts: [{ dest: '/', input: 0, output: 0 }],
        },
      },
    },
    result: 'step',
    image: { base: 'base', config: {} },
  };
}

/** Bytes of a `formatBytes` figure (`12.3MiB`). */
function bytesOf(text: string): number {
  const m = /^([\d.]+)(B|KiB|MiB|GiB|TiB)$/.exec(text.trim());
  assert.ok(m !== null, `not a size: ${text}`);
  const unit = ['B', 'KiB', 'MiB', 'GiB', 'TiB'].indexOf(m[2] as string);
  return Number(m[1]) * 1024 ** unit;
}

/** The `Total:` of `kiln du`, in bytes. */
function duTotal(stdout: string): number {
  const line = stdout.split('\n').find((l) => l.startsWith('Total:'));
  assert.ok(line !== undefined, stdout);
  return bytesOf(line.slice('Total:'.length));
}

async function duSb(dir: string): Promise<number> {
  const { stdout } = await execa('du', ['-sb', dir]);
  return Number(stdout.split('\t')[0]);
}

async function blobFiles(root: string): Promise<string[]> {
  return (await readdir(join(root, 'content', 'blobs', 'sha256')).catch(() => [])).map((hex) => `sha256:${hex}`).sort();
}

describe('storage: du, prune and images with content', () => {
  let work: string;
  let root: string;
  let registry: Awaited<ReturnType<typeof startRegistry>>;
  let baseRef: string;

  const build = async (name: string, definition: object, args: readonly string[] = []) => {
    const file = join(work, `${name}.json`);
    await writeFile(file, JSON.stringify(definition));
    return kiln(['build', file, '--root', root, '--insecure-registry', registry.host, '--progress', 'rawjson', ...args]);
  };

  before(async () => {
    work = await tempDir('storage');
    root = join(work, 'root');
    registry = await startRegistry();
    baseRef = `${registry.host}/kiln/busybox:1`;
    const pushed = await kiln(['build', BUSYBOX, '--root', join(work, 'push-root'), '--local', 'tools=/bin', '--output', `type=image,name=${baseRef},push=true,registry.insecure=true`]);
    assert.equal(pushed.exitCode, 0, pushed.stderr);
  });
  after(async () => {
    await registry?.stop();
    await removeDir(work);
  });

  test('after a pull and an image export, du lists the blobs and matches du -sb of the root; kiln images lists the image', async () => {
    const r = await build('app', stamped(baseRef, 'app'), ['--output', 'type=image,name=example.com/app:1']);
    assert.equal(r.exitCode, 0, r.stderr);
    const du = await kiln(['du', '--root', root]);
    assert.equal(du.exitCode, 0, du.stderr);
    const blobs = await blobFiles(root);
    assert.ok(blobs.length >= 4, `pulled manifest, config, layer and the exported ones: ${blobs.join(' ')}`);
    for (const blob of blobs) assert.ok(du.stdout.includes(blob), `du lists ${blob}:\n${du.stdout}`);
    const reported = duTotal(du.stdout);
    const actual = await duSb(root);
    process.stdout.write(`# du after pull + export: kiln ${reported} B, du -sb ${actual} B\n`);
    assert.ok(Math.abs(reported - actual) <= actual * 0.05, `kiln du ${reported} vs du -sb ${actual}`);

    const images = await kiln(['images', '--root', root]);
    assert.equal(images.exitCode, 0, images.stderr);
    const line = images.stdout.split('\n').find((l) => l.startsWith('example.com/app:1 '));
    assert.ok(line !== undefined, images.stdout);
    assert.match(line, /sha256:[0-9a-f]{64}\s+[\d.]+(B|KiB|MiB)\s+\d{4}-\d\d-\d\dT/);
  });

  test('an image kept by name is a base with image.resolvemode=local (never asking a registry)', async () => {
    const r = await build('from-kept', stamped('example.com/app:1', 'derived', { 'image.resolvemode': 'local' }), ['--output', `type=local,dest=${join(work, 'derived')}`]);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(await readFile(join(work, 'derived', 'tag'), 'utf8'), 'derived\n');
  });

  test('a build that pulls and exports while prune --all runs again and again succeeds', async () => {
    // Start from nothing: every blob the build needs is pulled during the prunes.
    assert.equal((await kiln(['images', 'rm', 'example.com/app:1', '--root', root])).exitCode, 0);
    assert.equal((await kiln(['prune', '--all', '--root', root])).exitCode, 0);
    const file = join(work, 'busy.json');
    await writeFile(file, JSON.stringify(stamped(baseRef, 'busy', { 'image.resolvemode': 'pull' }, 1)));
    const running = startKiln(['build', file, '--root', root, '--insecure-registry', registry.host, '--output', 'type=image,name=example.com/busy:1']);
    let prunes = 0;
    let finished = false;
    void running.then(() => (finished = true));
    while (!finished) {
      const p = await kiln(['prune', '--all', '--root', root]);
      assert.equal(p.exitCode, 0, p.stderr);
      prunes++;
    }
    const done = await running;
    assert.equal(done.exitCode, 0, String(done.stderr));
    assert.ok(prunes >= 2, `prunes ran during the build: ${prunes}`);
    const again = await build('from-busy', stamped('example.com/busy:1', 'again', { 'image.resolvemode': 'local' }));
    assert.equal(again.exitCode, 0, again.stderr);
  });

  test('prune --all leaves in ROOT/content only the blobs of kept images; du still matches du -sb', async () => {
    const p = await kiln(['prune', '--all', '--root', root]);
    assert.equal(p.exitCode, 0, p.stderr);
    const images = await kiln(['images', '--root', root]);
    const digest = /sha256:[0-9a-f]{64}/.exec(images.stdout.split('\n').find((l) => l.startsWith('example.com/busy:1 ')) ?? '')?.[0];
    assert.ok(digest !== undefined, images.stdout);
    const hex = (d: string): string => d.slice('sha256:'.length);
    const manifest = JSON.parse(await readFile(join(root, 'content', 'blobs', 'sha256', hex(digest)), 'utf8')) as { config: { digest: string }; layers: { digest: string }[] };
    const kept = [digest, manifest.config.digest, ...manifest.layers.map((l) => l.digest)].sort();
    assert.deepEqual(await blobFiles(root), [...new Set(kept)].sort());
    const du = await kiln(['du', '--root', root]);
    const reported = duTotal(du.stdout);
    const actual = await duSb(root);
    process.stdout.write(`# du after prune --all: kiln ${reported} B, du -sb ${actual} B\n`);
    assert.ok(Math.abs(reported - actual) <= actual * 0.05, `kiln du ${reported} vs du -sb ${actual}\n${du.stdout}`);

    assert.equal((await kiln(['images', 'rm', 'example.com/busy:1', '--root', root])).exitCode, 0);
    assert.equal((await kiln(['prune', '--all', '--root', root])).exitCode, 0);
    assert.deepEqual(await blobFiles(root), []);
    const missing = await kiln(['images', 'rm', 'example.com/busy:1', '--root', root]);
    assert.equal(missing.exitCode, 1);
    assert.match(missing.stderr, /no image named example.com\/busy:1/);
  });

  test('--no-cache reruns every op and its result replaces the cached one; --no-cache-filter names ops', async () => {
    const stampOf = async (run: string, args: readonly string[]): Promise<{ stamp: string; cached: boolean[] }> => {
      const dest = join(work, `nc-${run}`);
      const r = await build('nc', stamped(baseRef, 'nc'), ['--output', `type=local,dest=${dest}`, ...args]);
      assert.equal(r.exitCode, 0, r.stderr);
      return { stamp: await readFile(join(dest, 'stamp'), 'utf8'), cached: [...verticesByName(r.stderr).values()].map((v) => v.cached === true) };
    };
    const one = await stampOf('1', []);
    const two = await stampOf('2', ['--no-cache']);
    assert.ok(two.cached.every((c) => !c), 'nothing CACHED with --no-cache');
    assert.notEqual(two.stamp, one.stamp);
    const three = await stampOf('3', []);
    assert.ok(three.cached.every((c) => c), 'the next build is cached');
    assert.equal(three.stamp, two.stamp, "the cached result is --no-cache's");

    const bad = await build('nc', stamped(baseRef, 'nc'), ['--no-cache-filter', 'step,nope']);
    assert.equal(bad.exitCode, 2);
    assert.match(bad.stderr, /no op named "nope"/);
    const four = await stampOf('4', ['--no-cache-filter', 'step']);
    assert.notEqual(four.stamp, three.stamp);
  });
});
