/**
 * Cache that travels (`--export-cache` / `--import-cache`), with CI runners
 * played by separate kiln roots: runner A builds a graph whose exec steps
 * each write a random marker and exports its cache to a real registry
 * (Debian's docker-registry on 127.0.0.1) or a directory; runner B, on a
 * fresh root, imports it. What B's build ran is read from rawjson progress
 * and from the markers (a step that ran again writes a new one).
 */
import assert from 'node:assert/strict';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startRegistry, type TestRegistry } from '../support/registry.js';
import { assertSameTree, EXAMPLES, kiln, removeDir, tempDir, verticesByName } from './harness.js';

interface Definition {
  readonly version: 1;
  readonly ops: Record<string, unknown>;
  readonly result: string;
}

/** busybox from --local tools=/bin, then s1 → s2 → uses-data (reads local://data) → last (writes `tag`). */
async function definition(tag: string): Promise<Definition> {
  const busybox = JSON.parse(await readFile(join(EXAMPLES, 'busybox.json'), 'utf8')) as Definition;
  const step = (input: string, script: string, extra: object[] = [], inputs: string[] = []): object => ({
    inputs: [input, ...inputs],
    exec: { meta: { args: ['/bin/sh', '-c', script] }, mounts: [{ dest: '/', input: 0, output: 0 }, ...extra] },
  });
  const marker = (name: string): string => `cat /proc/sys/kernel/random/uuid > /${name}`;
  return {
    version: 1,
    ops: {
      ...busybox.ops,
      data: { source: { identifier: 'local://data' } },
      s1: step('base', marker('m1')),
      s2: step('s1', marker('m2')),
      'uses-data': step('s2', `cat /data/f > /copied && ${marker('m3')}`, [{ dest: '/data', input: 1, output: -1, readonly: true }], ['data']),
      last: step('uses-data', `echo ${tag} > /tag && ${marker('m4')}`),
    },
    result: 'last',
  };
}

const MARKERS = ['m1', 'm2', 'm3', 'm4'] as const;

async function markers(dir: string): Promise<Record<string, string>> {
  return Object.fromEntries(await Promise.all(MARKERS.map(async (m) => [m, await readFile(join(dir, m), 'utf8')] as const)));
}

describe('cache export and import between runners', () => {
  let work: string;
  let registry: TestRegistry;
  let data: string;
  let n = 0;

  before(async () => {
    work = await tempDir('cache-export');
    registry = await startRegistry();
    data = join(work, 'data');
    await mkdir(data);
    await writeFile(join(data, 'f'), 'one\n');
  });
  after(async () => {
    await registry?.stop();
    await removeDir(work);
  });

  /** One build on `root` of definition(tag), its tree written to a new directory; returns the run, the tree and the metadata file's JSON. */
  async function build(root: string, tag: string, flags: readonly string[]) {
    const i = n++;
    const file = join(work, `def-${i}.json`);
    await writeFile(file, JSON.stringify(await definition(tag)));
    const out = join(work, `out-${i}`);
    const meta = join(work, `meta-${i}.json`);
    const r = await kiln(
      ['build', file, '--root', root, '--local', 'tools=/bin', '--local', `data=${data}`, '--progress', 'rawjson', '--output', `type=local,dest=${out}`, '--output', 'type=image,name=example.com/cached:1', '--metadata-file', meta, ...flags],
      { env: { SOURCE_DATE_EPOCH: '1700000000' } },
    );
    assert.equal(r.exitCode, 0, r.stderr);
    const metadata = JSON.parse(await readFile(meta, 'utf8')) as Record<string, unknown>;
    return { r, out, metadata, ran: [...verticesByName(r.stderr).values()].filter((v) => !v.cached && v.completed !== undefined).map((v) => v.name) };
  }

  test('registry, mode=max: a fresh root runs nothing, same markers, same tree, same image digest; metadata-file names both', async () => {
    const ref = `${registry.host}/cache/app:max`;
    const a = await build(join(work, 'root-a'), 'v1', ['--export-cache', `type=registry,ref=${ref},mode=max,registry.insecure=true`]);
    assert.match(String(a.metadata['containerimage.digest']), /^sha256:[0-9a-f]{64}$/);
    const caches = a.metadata['cache.exports'] as { type: string; ref: string; digest: string }[];
    assert.equal(caches.length, 1);
    assert.equal(caches[0]?.ref, ref);
    assert.match(String(caches[0]?.digest), /^sha256:/);
    assert.deepEqual((a.metadata['containerimage.descriptor'] as { digest: string }).digest, a.metadata['containerimage.digest']);

    const b = await build(join(work, 'root-b'), 'v1', ['--import-cache', `type=registry,ref=${ref},registry.insecure=true`]);
    assert.deepEqual(b.ran, [], `B ran ${b.ran.join(', ')}`);
    assert.deepEqual(await markers(b.out), await markers(a.out));
    await assertSameTree(a.out, b.out);
    assert.equal(b.metadata['containerimage.digest'], a.metadata['containerimage.digest']);

    // max kept every step: a changed last step on a third runner reruns only that step.
    const c = await build(join(work, 'root-c'), 'v2', ['--import-cache', `type=registry,ref=${ref},registry.insecure=true`]);
    assert.deepEqual(c.ran.filter((name) => !name.startsWith('local://')), [c.ran.find((name) => name.includes('echo v2')) as string]);
    const ma = await markers(a.out);
    const mc = await markers(c.out);
    assert.deepEqual([mc.m1, mc.m2, mc.m3], [ma.m1, ma.m2, ma.m3]);
    assert.notEqual(mc.m4, ma.m4);

    // A changed local file reruns only what reads it and what is built on it.
    await writeFile(join(data, 'f'), 'two\n');
    try {
      const d = await build(join(work, 'root-d'), 'v1', ['--import-cache', `type=registry,ref=${ref},registry.insecure=true`]);
      const md = await markers(d.out);
      assert.deepEqual([md.m1, md.m2], [ma.m1, ma.m2]);
      assert.notEqual(md.m3, ma.m3);
      assert.notEqual(md.m4, ma.m4);
      assert.equal(await readFile(join(d.out, 'copied'), 'utf8'), 'two\n');
    } finally {
      await writeFile(join(data, 'f'), 'one\n');
    }
  });

  test('registry, mode=min: the result hits, but a changed last step reruns every step', async () => {
    const ref = `${registry.host}/cache/app:min`;
    const a = await build(join(work, 'root-min-a'), 'v1', ['--export-cache', `type=registry,ref=${ref},registry.insecure=true`]);
    const b = await build(join(work, 'root-min-b'), 'v1', ['--import-cache', `type=registry,ref=${ref},registry.insecure=true`]);
    assert.deepEqual(b.ran, []);
    assert.deepEqual(await markers(b.out), await markers(a.out));
    const c = await build(join(work, 'root-min-c'), 'v2', ['--import-cache', `type=registry,ref=${ref},registry.insecure=true`]);
    const ma = await markers(a.out);
    const mc = await markers(c.out);
    for (const m of MARKERS) assert.notEqual(mc[m], ma[m], `${m} should have been rewritten`);
  });

  test('local directory cache: export to a directory, import on a fresh root with the other snapshotter', async () => {
    const dir = join(work, 'cache-dir');
    const a = await build(join(work, 'root-local-a'), 'v1', ['--export-cache', `type=local,dest=${dir},mode=max`]);
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: { annotations: Record<string, string> }[] };
    assert.equal(index.manifests[0]?.annotations['org.opencontainers.image.ref.name'], 'latest');
    const b = await build(join(work, 'root-local-b'), 'v1', ['--import-cache', `type=local,src=${dir}`, '--snapshotter', 'native']);
    assert.deepEqual(b.ran, []);
    assert.deepEqual(await markers(b.out), await markers(a.out));
    assert.equal(b.metadata['containerimage.digest'], a.metadata['containerimage.digest']);
  });

  test('import failures: a missing ref, an unreachable registry, a directory that is no cache: one warning each, a cold build, exit 0', async () => {
    const notCache = join(work, 'not-a-cache');
    await mkdir(notCache);
    const b = await build(join(work, 'root-fail'), 'v1', [
      '--import-cache', `type=registry,ref=${registry.host}/cache/nothing:here,registry.insecure=true`,
      '--import-cache', 'type=registry,ref=127.0.0.1:9/cache/app:x,registry.insecure=true',
      '--import-cache', `type=local,src=${notCache}`,
    ]);
    const warnings = b.r.stderr.split('\n').filter((l) => l.includes('"type":"warning"'));
    assert.equal(warnings.length, 3, b.r.stderr);
    assert.match(warnings[0] ?? '', /cache\/nothing:here/);
    assert.match(warnings[1] ?? '', /127\.0\.0\.1:9/);
    assert.match(warnings[2] ?? '', /not-a-cache/);
    assert.ok(b.ran.some((name) => name.includes('m4')));
  });

  test('a corrupt layer blob in the cache: one warning, the step runs cold', async () => {
    const dir = join(work, 'cache-corrupt');
    await build(join(work, 'root-corrupt-a'), 'v1', ['--export-cache', `type=local,dest=${dir}`]);
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
    const manifest = JSON.parse(await readFile(join(dir, 'blobs', 'sha256', (index.manifests[0]?.digest ?? '').slice(7)), 'utf8')) as { layers: { digest: string }[] };
    const top = manifest.layers.at(-1)?.digest ?? '';
    await writeFile(join(dir, 'blobs', 'sha256', top.slice(7)), 'garbage');
    const b = await build(join(work, 'root-corrupt-b'), 'v1', ['--import-cache', `type=local,src=${dir}`, '--progress', 'plain']);
    assert.equal(b.r.stderr.split('\n').filter((l) => l.startsWith('WARNING: cache import')).length, 1, b.r.stderr);
  });

  test('export failure fails the build unless ignore-error=true', async () => {
    const file = join(work, 'def-fail.json');
    await writeFile(file, JSON.stringify(await definition('v1')));
    const args = ['build', file, '--root', join(work, 'root-export-fail'), '--local', 'tools=/bin', '--local', `data=${data}`];
    const failed = await kiln([...args, '--export-cache', 'type=registry,ref=127.0.0.1:9/cache/app:x,registry.insecure=true']);
    assert.notEqual(failed.exitCode, 0);
    assert.match(failed.stderr, /127\.0\.0\.1:9/);
    const ignored = await kiln([...args, '--export-cache', 'type=registry,ref=127.0.0.1:9/cache/app:x,registry.insecure=true,ignore-error=true']);
    assert.equal(ignored.exitCode, 0, ignored.stderr);
    assert.match(ignored.stderr, /WARNING: cache export/);
  });
});
