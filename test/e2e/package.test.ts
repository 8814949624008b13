/**
 * kiln as a package: `npm pack` makes a tarball that installs into a fresh
 * directory and works there, in plain JavaScript (the API, the `kiln`
 * command, an example program); and the API reference builds from the TSDoc.
 *
 * The install is offline: the tarball's dependencies are installed at the
 * versions this repository's package-lock.json pins, from the npm cache
 * that installing this repository filled (`npm ci`), so the test needs no
 * network and installs exactly what the repository was tested with.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { REPO, removeDir, tempDir } from './harness.js';

interface LockEntry {
  readonly version?: string;
  readonly resolved?: string;
  readonly dev?: boolean;
  readonly [field: string]: unknown;
}

interface Lock {
  readonly packages: Readonly<Record<string, LockEntry>>;
}

/**
 * A package-lock.json for an app that depends on the tarball `tgz` only:
 * the tarball, and every non-dev package of the repository's lock at the
 * same place in node_modules. A lock without `resolved` URLs (npm leaves
 * them out for the default registry) gets the registry's tarball URL, which
 * is what the cache keys its entries under.
 */
function appLock(repoLock: Lock, tgz: string, tgzBytes: Buffer): object {
  const root = repoLock.packages[''] ?? {};
  const integrity = `sha512-${createHash('sha512').update(tgzBytes).digest('base64')}`;
  const packages: Record<string, LockEntry> = {
    '': { name: 'app', version: '1.0.0', dependencies: { kiln: `file:${tgz}` } },
    'node_modules/kiln': { version: root.version ?? '0.0.0', resolved: `file:${tgz}`, integrity, dependencies: root['dependencies'], bin: root['bin'], engines: root['engines'] },
  };
  for (const [where, entry] of Object.entries(repoLock.packages)) {
    if (where === '' || entry.dev === true || !where.startsWith('node_modules/')) continue;
    const name = where.slice(where.lastIndexOf('node_modules/') + 'node_modules/'.length);
    const resolved = entry.resolved ?? `https://registry.npmjs.org/${name}/-/${name.split('/').at(-1) ?? name}-${entry.version ?? ''}.tgz`;
    packages[where] = { ...entry, resolved };
  }
  return { name: 'app', version: '1.0.0', lockfileVersion: 3, requires: true, packages };
}

describe('the npm package', () => {
  let work: string;
  let app: string;
  before(async () => {
    work = await tempDir('package');
    app = join(work, 'app');
  });
  after(async () => removeDir(work));

  test('packs with dist/ built by prepack, and lists what a user needs', async () => {
    const pkg = JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8')) as { scripts: Record<string, string>; exports: Record<string, unknown> };
    assert.match(pkg.scripts['prepack'] ?? '', /npm run --silent build/, 'dist/ is built before packing');
    assert.deepEqual(pkg.exports['.'], { types: './dist/src/index.d.ts', default: './dist/src/index.js' });
    // dist/ is built already (the tests run from it): pack without building it again.
    const { stdout } = await execa('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: REPO });
    const [packed] = JSON.parse(stdout) as { filename: string; files: { path: string }[] }[];
    assert.ok(packed !== undefined);
    const files = packed.files.map((f) => f.path);
    for (const needed of ['bin/kiln.js', 'dist/kiln.cjs', 'dist/src/index.js', 'dist/src/index.d.ts', 'src/executor/containerd/proto/tasks.proto', 'examples/build-rootfs.mjs', 'README.md']) {
      assert.ok(files.includes(needed), `${needed} is in the package`);
    }
    assert.ok(!files.some((f) => f.startsWith('dist/test/') || f.startsWith('test/') || f.endsWith('.ts') && !f.endsWith('.d.ts')), 'no tests or TypeScript sources');

    await execa('mkdir', ['-p', app]);
    await execa('cp', [join(work, packed.filename), app]);
    const repoLock = JSON.parse(await readFile(join(REPO, 'package-lock.json'), 'utf8')) as Lock;
    await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true, type: 'module', dependencies: { kiln: `file:${packed.filename}` } }));
    await writeFile(join(app, 'package-lock.json'), JSON.stringify(appLock(repoLock, packed.filename, await readFile(join(app, packed.filename)))));
    const install = await execa('npm', ['ci', '--offline', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: app, reject: false, timeout: 300_000 });
    assert.equal(install.exitCode, 0, install.stderr);
  });

  test('import("kiln") in plain JavaScript: Session and DefinitionBuilder build a file tree', async () => {
    const out = join(work, 'out');
    const script = `
      import('kiln').then(async ({ Session, DefinitionBuilder, solve, exportResult, mkdir, mkfile }) => {
        const b = new DefinitionBuilder();
        const tree = b.file('tree', [mkdir('/app', { mode: '0755' }), mkfile('/app/hello', 'hi from the package\\n')]);
        const session = await Session.open({ root: ${JSON.stringify(join(work, 'root'))} });
        try {
          const result = await solve(session, b.build(tree));
          try { await exportResult(result, [{ type: 'local', dest: ${JSON.stringify(out)} }]); } finally { await result.release(); }
        } finally { await session.close(); }
        console.log('ok');
      });`;
    const r = await execa(process.execPath, ['-e', script], { cwd: app, reject: false });
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, 'ok');
    assert.equal(await readFile(join(out, 'app', 'hello'), 'utf8'), 'hi from the package\n');
  });

  test('the installed kiln command and an installed example run', async () => {
    const version = await execa(join(app, 'node_modules', '.bin', 'kiln'), ['--version'], { cwd: app, reject: false });
    assert.equal(version.exitCode, 0, version.stderr);
    assert.match(version.stdout, /^\d+\.\d+\.\d+$/);
    const rootfs = join(work, 'rootfs');
    const r = await execa(process.execPath, [join(app, 'node_modules', 'kiln', 'examples', 'build-rootfs.mjs'), rootfs], { cwd: app, reject: false, env: { KILN_ROOT: join(work, 'root') } });
    assert.equal(r.exitCode, 0, r.stderr);
    assert.match(await readFile(join(rootfs, 'etc', 'motd'), 'utf8'), /^built by kiln/);
  });

  test('the API reference builds from the TSDoc without a warning (npm run docs)', async () => {
    const out = join(work, 'api');
    const r = await execa('npx', ['typedoc', '--out', out], { cwd: REPO, reject: false, timeout: 300_000 });
    assert.equal(r.exitCode, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(await readFile(join(out, 'classes', 'Session.html'), 'utf8'), /Session/);
  });
});
