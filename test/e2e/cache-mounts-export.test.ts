/**
 * Cache mounts that travel (`--export-cache ...,cache-mounts=`), with CI
 * runners played by separate kiln roots: runner A fills `/root/.cache/x`
 * in a cache mount (files, a symlink, a file owned by 1234:5678 with mode
 * 0600) and exports it to a real registry (docker-registry on 127.0.0.1)
 * or a directory; runner B, on a fresh root, imports the cache and its
 * first build of another step sees what A left. A mount B already has is
 * never overwritten. And `ignore-error=false` on an import turns a cache
 * that cannot be read into a failed build.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startRegistry, type TestRegistry } from '../support/registry.js';
import { EXAMPLES, kiln, removeDir, tempDir } from './harness.js';

interface Definition {
  readonly version: 1;
  readonly ops: Record<string, unknown>;
  readonly result: string;
}

const CACHE = '/root/.cache/x';

/** busybox from --local tools=/bin, then one step running `script` with cache mount `xcache` at /root/.cache/x. */
async function definition(script: string): Promise<Definition> {
  const busybox = JSON.parse(await readFile(join(EXAMPLES, 'busybox.json'), 'utf8')) as Definition;
  return {
    version: 1,
    ops: {
      ...busybox.ops,
      step: {
        inputs: ['base'],
        exec: {
          meta: { args: ['/bin/sh', '-c', script] },
          mounts: [
            { dest: '/', input: 0, output: 0 },
            { dest: CACHE, type: 'cache', input: -1, output: -1, cache: { id: 'xcache', sharing: 'locked' } },
          ],
        },
      },
    },
    result: 'step',
  };
}

/** What runner A leaves in the cache mount: a file with a random marker, a symlink, a subdirectory, a file owned by 1234:5678 with mode 0600. */
const FILL = [
  `cat /proc/sys/kernel/random/uuid > ${CACHE}/marker`,
  `mkdir -p ${CACHE}/sub && echo deep > ${CACHE}/sub/file`,
  `ln -s marker ${CACHE}/link`,
  `echo secret-ish > ${CACHE}/owned && chown 1234:5678 ${CACHE}/owned && chmod 0600 ${CACHE}/owned`,
  'echo filled > /done',
].join(' && ');

/** What runner B's step writes into its result: what it found in the cache mount (a different step: no result of A's can answer it). */
const READ = [
  `cat ${CACHE}/marker > /seen-marker 2>/dev/null || echo none > /seen-marker`,
  `cat ${CACHE}/sub/file > /seen-sub 2>/dev/null || echo none > /seen-sub`,
  `readlink ${CACHE}/link > /seen-link 2>/dev/null || echo none > /seen-link`,
  `stat -c '%u:%g %a' ${CACHE}/owned > /seen-owned 2>/dev/null || echo none > /seen-owned`,
].join('; ');

describe('cache mounts in an exported cache', () => {
  let work: string;
  let registry: TestRegistry;
  let n = 0;

  before(async () => {
    work = await tempDir('cache-mounts');
    registry = await startRegistry();
  });
  after(async () => {
    await registry?.stop();
    await removeDir(work);
  });

  /** One build on `root` of a step running `script`; returns the run and the result's directory. */
  async function build(root: string, script: string, flags: readonly string[], expectExit = 0) {
    const i = n++;
    const file = join(work, `def-${i}.json`);
    await writeFile(file, JSON.stringify(await definition(script)));
    const out = join(work, `out-${i}`);
    const r = await kiln(['build', file, '--root', root, '--local', 'tools=/bin', '--progress', 'plain', '--output', `type=local,dest=${out}`, ...flags]);
    if (expectExit === 0) assert.equal(r.exitCode, 0, r.stderr);
    return { r, out };
  }

  const read = (dir: string, name: string): Promise<string> => readFile(join(dir, name), 'utf8').then((s) => s.trim());

  /** A fills and exports with `exportFlag`; B (a fresh root) imports with `importFlag` and reads. */
  async function travel(name: string, exportFlag: string, importFlag: string): Promise<void> {
    const rootA = join(work, `${name}-a`);
    await build(rootA, FILL, ['--export-cache', exportFlag]);
    // A's own mount, read back on A: what B must see.
    const onA = await build(rootA, READ, []);
    const b = await build(join(work, `${name}-b`), READ, ['--import-cache', importFlag]);
    assert.doesNotMatch(b.r.stderr, /WARNING/, b.r.stderr);
    assert.match(await read(b.out, 'seen-marker'), /^[0-9a-f-]{36}$/);
    assert.equal(await read(b.out, 'seen-marker'), await read(onA.out, 'seen-marker'));
    assert.equal(await read(b.out, 'seen-sub'), 'deep');
    assert.equal(await read(b.out, 'seen-link'), 'marker');
    assert.equal(await read(b.out, 'seen-owned'), '1234:5678 600');
  }

  test('registry (cache-mounts=all): a fresh root sees the contents, owners, modes and symlinks A left', async () => {
    const ref = `${registry.host}/cache/mounts:all`;
    await travel('reg', `type=registry,ref=${ref},registry.insecure=true,cache-mounts=all`, `type=registry,ref=${ref},registry.insecure=true`);
  });

  test('local directory (a quoted "cache-mounts=ID,ID" field): the same', async () => {
    const dir = join(work, 'cache-dir');
    await travel('dir', `type=local,dest=${dir},"cache-mounts=xcache,not-used-here"`, `type=local,src=${dir}`);
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
    const manifest = JSON.parse(await readFile(join(dir, 'blobs', 'sha256', (index.manifests[0]?.digest ?? '').slice(7)), 'utf8')) as { config: { digest: string } };
    const description = JSON.parse(await readFile(join(dir, 'blobs', 'sha256', manifest.config.digest.slice(7)), 'utf8')) as { mounts: { id: string; layers: number[] }[] };
    assert.deepEqual(
      description.mounts.map((m) => m.id),
      ['xcache'],
    );
    assert.ok((description.mounts[0]?.layers.length ?? 0) > 0);
  });

  test('a mount B already has is not overwritten by the imported one', async () => {
    const ref = `${registry.host}/cache/mounts:keep`;
    await build(join(work, 'keep-a'), FILL, ['--export-cache', `type=registry,ref=${ref},registry.insecure=true,cache-mounts=xcache`]);
    const rootB = join(work, 'keep-b');
    await build(rootB, `echo local-one > ${CACHE}/marker`, []);
    const b = await build(rootB, READ, ['--import-cache', `type=registry,ref=${ref},registry.insecure=true`]);
    assert.equal(await read(b.out, 'seen-marker'), 'local-one');
    assert.equal(await read(b.out, 'seen-owned'), 'none');
  });

  test('ignore-error=false: a missing ref fails the build with one line naming the cache; the default warns and builds', async () => {
    const missing = `${registry.host}/cache/nothing:here`;
    const failed = await build(join(work, 'strict'), READ, ['--import-cache', `type=registry,ref=${missing},registry.insecure=true,ignore-error=false`], 1);
    assert.notEqual(failed.r.exitCode, 0);
    const lines = failed.r.stderr.split('\n').filter((l) => l.includes('cache import from'));
    assert.equal(lines.length, 1, failed.r.stderr);
    assert.match(lines[0] ?? '', new RegExp(`cache import from registry ${missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} failed \\(ignore-error=false\\): `));
    const warned = await build(join(work, 'lenient'), READ, ['--import-cache', `type=registry,ref=${missing},registry.insecure=true`]);
    assert.equal(warned.r.stderr.split('\n').filter((l) => l.startsWith('WARNING: cache import')).length, 1, warned.r.stderr);
    assert.equal(await read(warned.out, 'seen-marker'), 'none');
  });
});
