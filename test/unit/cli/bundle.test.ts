import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

/** The repository root (this file runs from dist/test/unit/cli). */
const REPO = fileURLToPath(new URL('../../../../', import.meta.url));
const BUNDLE = path.join(REPO, 'dist', 'kiln.cjs');
/** Named for the bundle it caches: its size and mtime (ns), in hex. */
const CACHE_FILE = /^\.kiln\.cjs\.[0-9a-f]+-[0-9a-f]+\.v8cache$/;

interface Run {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `node BIN ARGS...`; the loader says on stderr whether it used a code cache. */
function kiln(bin: string, args: readonly string[], env: Record<string, string> = {}): Run {
  // No npm_package_version from `npm test`: --version prints the bundle's own default.
  const { npm_package_version: _, ...inherited } = process.env;
  const r = spawnSync(process.execPath, [bin, ...args], {
    encoding: 'utf8',
    env: { ...inherited, KILN_V8CACHE_DEBUG: '1', ...env },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('the bundled CLI, dist/kiln.cjs', () => {
  it('is built, and loads external packages with require(), never import()', async () => {
    const source = await readFile(BUNDLE, 'utf8').catch(() => assert.fail(`${BUNDLE} is missing: run npm run build`));
    assert.doesNotMatch(source, /\bimport\(\s*["'`]/);
    assert.match(source, /require\("fs-xattr"\)/);
    assert.match(source, /require\("@grpc\/grpc-js"\)/);
  });
});

describe('bin/kiln.js, the loader', () => {
  // A copy of the loader and the bundle in a temp dir, so the cache files are
  // its own; packages come from the repository's node_modules.
  let dir = '';
  let bin = '';
  let bundle = '';
  const cacheFiles = async (): Promise<string[]> => (await readdir(path.join(dir, 'dist'))).filter((n) => n.startsWith('.kiln.cjs.'));

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'kiln-bundle-'));
    bin = path.join(dir, 'bin', 'kiln.js');
    bundle = path.join(dir, 'dist', 'kiln.cjs');
    await mkdir(path.dirname(bin));
    await mkdir(path.dirname(bundle));
    await copyFile(path.join(REPO, 'package.json'), path.join(dir, 'package.json'));
    await copyFile(path.join(REPO, 'bin', 'kiln.js'), bin);
    // It makes bin/kiln.js CommonJS in a package whose modules are ES modules.
    await copyFile(path.join(REPO, 'bin', 'package.json'), path.join(dir, 'bin', 'package.json'));
    await copyFile(BUNDLE, bundle);
    await symlink(path.join(REPO, 'node_modules'), path.join(dir, 'node_modules'));
    await symlink(path.join(REPO, 'dist', 'src'), path.join(dir, 'dist', 'src'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes a code cache on the first run and uses it on the next', async () => {
    const first = kiln(bin, ['--version']);
    assert.deepEqual(first, { status: 0, stdout: '0.1.0\n', stderr: 'v8cache: miss\n' });
    const files = await cacheFiles();
    assert.equal(files.length, 1, files.join(', '));
    assert.match(files[0]!, CACHE_FILE);
    assert.deepEqual(kiln(bin, ['--version']), { status: 0, stdout: '0.1.0\n', stderr: 'v8cache: hit\n' });
  });

  it('keeps exit codes and error text', () => {
    assert.deepEqual(kiln(bin, ['build']), { status: 2, stdout: '', stderr: "v8cache: hit\nkiln: missing required argument 'file'\n" });
  });

  it('does not use the cache of a bundle with other content of the same length', async () => {
    const [old] = await cacheFiles();
    const source = await readFile(bundle, 'utf8');
    const changed = source.replace(/\?\? "0\.1\.0"/, '?? "9.9.9"');
    assert.notEqual(changed, source);
    assert.equal(changed.length, source.length);
    await writeFile(bundle, changed);
    // V8 alone would take the old cache (same length) and print 0.1.0.
    assert.deepEqual(kiln(bin, ['--version']), { status: 0, stdout: '9.9.9\n', stderr: 'v8cache: miss\n' });
    const files = await cacheFiles();
    assert.equal(files.length, 1, files.join(', '));
    assert.notEqual(files[0], old, 'the old cache file was replaced');
  });

  it('runs as well with a corrupt cache file, and replaces it', async () => {
    const [file] = await cacheFiles();
    await writeFile(path.join(dir, 'dist', file!), 'not a code cache');
    assert.deepEqual(kiln(bin, ['--version']), { status: 0, stdout: '9.9.9\n', stderr: 'v8cache: rejected\n' });
    assert.deepEqual(kiln(bin, ['--version']), { status: 0, stdout: '9.9.9\n', stderr: 'v8cache: hit\n' });
  });

  it('runs as well when the cache can be neither read nor written', async () => {
    const [file] = await cacheFiles();
    // A directory where the cache file goes: reading it fails, renaming onto it too.
    await rm(path.join(dir, 'dist', file!));
    await mkdir(path.join(dir, 'dist', file!));
    assert.deepEqual(kiln(bin, ['--version']), { status: 0, stdout: '9.9.9\n', stderr: 'v8cache: miss\n' });
    assert.deepEqual(await cacheFiles(), [file], 'no temp file is left behind');
    await rm(path.join(dir, 'dist', file!), { recursive: true });
  });

  it('runs the ES modules with KILN_NO_BUNDLE=1, with a bundle older than them, and without one', async () => {
    assert.deepEqual(kiln(bin, ['--version'], { KILN_NO_BUNDLE: '1' }), { status: 0, stdout: '0.1.0\n', stderr: '' });
    // As after a plain tsc, which rewrites dist/src and not the bundle.
    const compiled = await stat(path.join(dir, 'dist', 'src', 'cli', 'main.js'));
    await utimes(bundle, compiled.atime, new Date(compiled.mtimeMs - 1000));
    assert.deepEqual(kiln(bin, ['--version']), { status: 0, stdout: '0.1.0\n', stderr: '' });
    await rm(bundle);
    assert.deepEqual(kiln(bin, ['--version']), { status: 0, stdout: '0.1.0\n', stderr: '' });
    assert.deepEqual(await cacheFiles(), []);
  });
});
