/**
 * Where outputs may go and what they leave there: a local output writes into
 * its directory and leaves the rest alone; destinations that would overwrite
 * kiln's root or the build's sources are refused before anything runs;
 * staging files of a killed or interrupted kiln never stay behind.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { lstat, mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { KILN, kiln, removeDir, startKiln, tempDir, vertices } from './harness.js';

describe('outputs', () => {
  let work: string;
  let def: string;
  let context: string;
  before(async () => {
    work = await tempDir('outputs');
    context = join(work, 'context');
    await mkdir(join(context, 'app'), { recursive: true });
    await writeFile(join(context, 'app', 'main.txt'), 'from the build\n');
    def = join(work, 'def.json');
    await writeFile(
      def,
      JSON.stringify({
        version: 1,
        ops: {
          ctx: { source: { identifier: 'local://context' } },
          app: { inputs: ['ctx'], file: { actions: [{ input: 0, output: 0, mkfile: { path: '/app/VERSION', mode: '0644', data: '2\n' } }] } },
        },
        result: 'app',
      }),
    );
  });
  after(async () => removeDir(work));

  const build = (root: string, ...extra: string[]) => kiln(['build', def, '--root', root, '--local', `context=${context}`, '--progress', 'rawjson', ...extra]);

  test('dest=. writes into the working directory and keeps what was there', async () => {
    const cwd = join(work, 'cwd');
    await mkdir(join(cwd, 'app'), { recursive: true });
    await writeFile(join(cwd, 'build.json'), await readFile(def));
    await writeFile(join(cwd, 'app', 'notes.txt'), 'mine\n');
    await writeFile(join(cwd, 'app', 'VERSION'), '1\n');
    const args = [KILN, 'build', 'build.json', '--root', join(work, 'root-cwd'), '--local', `context=${context}`, '-o', 'type=local,dest=.'];
    const r = await execa(process.execPath, args, { cwd, reject: false, stdin: 'ignore' });
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(await readFile(join(cwd, 'build.json'), 'utf8'), await readFile(def, 'utf8'), 'the definition file is still there');
    assert.equal(await readFile(join(cwd, 'app', 'notes.txt'), 'utf8'), 'mine\n');
    assert.equal(await readFile(join(cwd, 'app', 'VERSION'), 'utf8'), '2\n', 'the result replaced its own files');
    assert.equal(await readFile(join(cwd, 'app', 'main.txt'), 'utf8'), 'from the build\n');
    assert.deepEqual((await readdir(cwd)).filter((n) => n.includes('kiln-')), []);
  });

  test("refuses kiln's root, a path in it, its parent, a local source and / before anything runs", async () => {
    const state = join(work, 'state');
    const root = join(state, 'root');
    const first = await build(root);
    assert.equal(first.exitCode, 0, first.stderr);
    await symlink(root, join(work, 'root-link'));
    const cases: [string, RegExp][] = [
      [root, /is kiln's root/],
      [join(work, 'root-link'), /is kiln's root/],
      [join(root, 'snapshots'), /is inside kiln's root/],
      [state, /contains kiln's root/],
      [context, /is the directory of local source "context"/],
      [work, /contains kiln's root|contains the directory of local source/],
      ['/', /filesystem root/],
    ];
    for (const [dest, message] of cases) {
      const r = await build(root, '-o', `type=local,dest=${dest}`);
      assert.equal(r.exitCode, 2, `${dest}: ${r.stderr}`);
      assert.match(r.stderr, message);
      const errorLines = r.stderr.split('\n').filter((l) => l.startsWith('error:'));
      assert.equal(errorLines.length, 1, r.stderr);
      assert.equal(vertices(r.stderr).size, 0, `${dest}: nothing ran`);
    }
    const again = await build(root);
    assert.equal(again.exitCode, 0, again.stderr);
    for (const v of vertices(again.stderr).values()) assert.equal(v.cached, true, 'the cache is intact');
    assert.equal(await readFile(join(context, 'app', 'main.txt'), 'utf8'), 'from the build\n', 'the source is intact');
  });

  test('a symlinked dest writes into the directory it points to', async () => {
    const target = join(work, 'link-target');
    await mkdir(target);
    await writeFile(join(target, 'kept'), 'kept\n');
    await symlink(target, join(work, 'out-link'));
    const r = await build(join(work, 'root-link-out'), '-o', `type=local,dest=${join(work, 'out-link')}`);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.ok((await lstat(join(work, 'out-link'))).isSymbolicLink());
    assert.equal(await readFile(join(target, 'app', 'VERSION'), 'utf8'), '2\n');
    assert.equal(await readFile(join(target, 'kept'), 'utf8'), 'kept\n');
  });

  test('six concurrent builds exporting to one dest, new or existing, all succeed', async () => {
    const root = join(work, 'root-concurrent');
    for (const dest of [join(work, 'shared-new'), join(work, 'shared-old')]) {
      if (dest.endsWith('old')) {
        await mkdir(join(dest, 'app'), { recursive: true });
        await writeFile(join(dest, 'app', 'VERSION'), 'old\n');
      }
      const runs = await Promise.all(Array.from({ length: 6 }, () => startKiln(['build', def, '--root', root, '--local', `context=${context}`, '-o', `type=local,dest=${dest}`])));
      for (const r of runs) assert.equal(r.exitCode, 0, String(r.stderr));
      assert.equal(await readFile(join(dest, 'app', 'VERSION'), 'utf8'), '2\n');
      assert.deepEqual((await readdir(dest)).filter((n) => n.includes('kiln-')), []);
    }
  });

  test('a device, a FIFO or a symlink as a file dest is written through, never replaced', async () => {
    const dir = join(work, 'special');
    await mkdir(dir);
    // A null device of the test's own: /dev/null itself is never risked.
    const nullDevice = join(dir, 'null');
    await execa('mknod', ['-m', '666', nullDevice, 'c', '1', '3']);
    const onDevice = await build(join(work, 'root-special'), '-o', `type=tar,dest=${nullDevice}`, '--metadata-file', nullDevice);
    assert.equal(onDevice.exitCode, 0, onDevice.stderr);
    const device = await lstat(nullDevice);
    assert.ok(device.isCharacterDevice(), 'the device is still a device');
    assert.equal(device.rdev, (await lstat('/dev/null')).rdev);

    const fifo = join(dir, 'fifo');
    await execa('mkfifo', [fifo]);
    const reader = execa('cat', [fifo], { encoding: 'buffer' });
    const onFifo = await build(join(work, 'root-special'), '-o', `type=oci,dest=${fifo}`);
    assert.equal(onFifo.exitCode, 0, onFifo.stderr);
    const read = await reader;
    assert.equal(Buffer.from(read.stdout).subarray(257, 262).toString(), 'ustar', 'the reader got the tarball');
    assert.ok((await lstat(fifo)).isFIFO(), 'the FIFO is still a FIFO');

    const file = join(dir, 'real.tar');
    const link = join(dir, 'link.tar');
    await writeFile(file, 'old\n');
    await symlink('real.tar', link);
    const onLink = await build(join(work, 'root-special'), '-o', `type=tar,dest=${link}`);
    assert.equal(onLink.exitCode, 0, onLink.stderr);
    assert.ok((await lstat(link)).isSymbolicLink(), 'the link stays a link');
    assert.equal((await readFile(file)).subarray(257, 262).toString(), 'ustar', 'the file it points to holds the tar');
    assert.deepEqual((await readdir(dir)).filter((n) => n.includes('kiln-')), []);
  });

  test('a directory as a tar dest is refused in one line before anything runs', async () => {
    const r = await build(join(work, 'root-tar'), '-o', `type=tar,dest=${work}`);
    assert.equal(r.exitCode, 2, r.stderr);
    assert.match(r.stderr, /^error: output dest .* is a directory: an archive output needs a file path/m);
    assert.equal(vertices(r.stderr).size, 0);
  });

  test("a dead kiln's staging files are removed by the next kiln writing in that directory", async () => {
    const outDir = join(work, 'archives');
    await mkdir(outDir);
    const dead = await deadPid();
    const stale = [`.c-1.tar.kiln-tmp-${dead}-0123abcd`, `.c-2.oci.kiln-tmp-${dead}-89abcdef`];
    const live = `.c-3.tar.kiln-tmp-${process.pid}-00112233`;
    for (const name of [...stale, live]) await writeFile(join(outDir, name), 'half written');
    const r = await build(join(work, 'root-stale'), '-o', `type=tar,dest=${join(outDir, 'c-4.tar')}`);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.deepEqual((await readdir(outDir)).sort(), [live, 'c-4.tar'].sort());
  });

  test('SIGTERM during an OCI export removes its temporary file', async () => {
    const big = join(work, 'big-context');
    await mkdir(big);
    // Random bytes do not compress: gzip takes a few seconds over them.
    await execa('sh', ['-c', 'head -c 268435456 /dev/urandom > "$1"', 'sh', join(big, 'blob.bin')]);
    const bigDef = join(work, 'big.json');
    await writeFile(bigDef, JSON.stringify({ version: 1, ops: { ctx: { source: { identifier: 'local://context' } } }, result: 'ctx' }));
    const outDir = join(work, 'oci-out');
    await mkdir(outDir);
    const child = startKiln(['build', bigDef, '--root', join(work, 'root-oci'), '--local', `context=${big}`, '-o', `type=oci,dest=${join(outDir, 'image.tar')}`]);
    const deadline = Date.now() + 60_000;
    while ((await readdir(outDir)).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.notDeepEqual(await readdir(outDir), [], 'the export started writing');
    child.kill('SIGTERM');
    const r = await child;
    assert.equal(r.exitCode, 143, String(r.stderr));
    assert.deepEqual(await readdir(outDir), [], 'nothing left in the output directory');
  });

  test("--root '' is refused, and a root that cannot be made fails at once", async () => {
    const empty = await kiln(['du', '--root', '']);
    assert.equal(empty.exitCode, 2, empty.stderr);
    assert.match(empty.stderr, /--root is empty/);
    const proc = await kiln(['du', '--root', '/proc/self/kiln-root']);
    assert.equal(proc.exitCode, 1, proc.stderr);
    assert.match(proc.stderr, /^error: cannot create kiln's root at \/proc\/self\/kiln-root: ENOENT/m);
  });
});

/** The pid of a process that has exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '']);
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid as number;
}
