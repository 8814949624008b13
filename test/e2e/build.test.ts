/** The CLI end to end: outputs, caching across processes, errors and exit codes. */
import assert from 'node:assert/strict';
import { cp, lstat, readFile, readlink, readdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { assertSameTree, EXAMPLES, kiln, removeDir, tempDir, vertices, verticesByName } from './harness.js';

const SITE = join(EXAMPLES, 'site.json');

describe('kiln build', () => {
  let work: string;
  let root: string;
  let context: string;

  before(async () => {
    work = await tempDir('build');
    root = join(work, 'root');
    context = join(work, 'context');
    await cp(join(EXAMPLES, 'site-context'), context, { recursive: true });
  });
  after(async () => removeDir(work));

  const build = (extra: readonly string[]) =>
    kiln(['build', SITE, '--root', root, '--local', `context=${context}`, '--progress', 'rawjson', ...extra]);

  test('builds the site example into a directory, then entirely from cache', async () => {
    const out1 = join(work, 'out1');
    const first = await build(['--output', `type=local,dest=${out1}`]);
    assert.equal(first.exitCode, 0, first.stderr);
    assert.equal(await readFile(join(out1, 'srv/www/VERSION'), 'utf8'), '1.0.0\n');
    assert.equal(await readlink(join(out1, 'srv/current')), 'www');
    assert.match(await readFile(join(out1, 'srv/www/index.html'), 'utf8'), /Built by kiln/);
    await assert.rejects(lstat(join(out1, 'srv/www/notes.tmp')), 'excluded by local.excludepatterns');
    assert.equal((await lstat(join(out1, 'srv/www/index.html'))).mode & 0o777, 0o644, 'copy mode go-w applied');
    const ran = vertices(first.stderr);
    assert.equal(ran.size, 4, 'four vertices reported');
    for (const v of ran.values()) {
      assert.equal(v.cached, false, `${v.name} ran`);
      assert.ok(v.started !== undefined && v.completed !== undefined, `${v.name} has timestamps`);
      assert.equal(v.error, undefined);
    }

    const out2 = join(work, 'out2');
    const second = await build(['--output', `type=local,dest=${out2}`]);
    assert.equal(second.exitCode, 0, second.stderr);
    const again = vertices(second.stderr);
    assert.deepEqual([...again.keys()].sort(), [...ran.keys()].sort(), 'same vertex digests in a new process');
    for (const v of again.values()) assert.equal(v.cached, true, `${v.name} cached on the second run`);
    await assertSameTree(out1, out2);
  });

  test('an edited local file reruns only the ops that depend on it', async () => {
    await build([]);
    await writeFile(join(context, 'index.html'), '<h1>changed</h1>\n');
    const out = join(work, 'out-edit');
    const run = await build(['--output', `type=local,dest=${out}`]);
    assert.equal(run.exitCode, 0, run.stderr);
    const byName = verticesByName(run.stderr);
    assert.equal(byName.get('load the site sources')?.cached, false);
    assert.equal(byName.get('copy / -> /srv/www/')?.cached, false);
    assert.equal(byName.get('merge')?.cached, false);
    const skeleton = [...byName.values()].find((v) => v.name.startsWith('mkdir /srv/www'));
    assert.equal(skeleton?.cached, true, 'the skeleton does not read the context');
    assert.equal(await readFile(join(out, 'srv/www/index.html'), 'utf8'), '<h1>changed</h1>\n');
  });

  test('writes a tar with modes, symlinks and ownership to a file and to stdout', async () => {
    const tarFile = join(work, 'site.tar');
    const r = await build(['--output', `type=tar,dest=${tarFile}`]);
    assert.equal(r.exitCode, 0, r.stderr);
    const listing = (await execa('tar', ['-tvf', tarFile])).stdout;
    assert.match(listing, /^lrwxrwxrwx 0\/0 .* srv\/current -> www$/m);
    assert.match(listing, /^-rw-r--r-- 0\/0 .* srv\/www\/VERSION$/m);
    const piped = await execa('node', [join(EXAMPLES, '..', 'bin', 'kiln.js'), 'build', SITE, '--root', root, '--local', `context=${context}`, '--output', 'type=tar,dest=-', '--progress', 'plain'], { encoding: 'buffer', stdin: 'ignore' });
    const names = (await execa('tar', ['-t'], { input: piped.stdout })).stdout.split('\n');
    assert.ok(names.some((n) => n.replace(/^\.\//, '') === 'srv/www/VERSION'), names.join(','));
  });

  test('reads the definition from stdin with -', async () => {
    const out = join(work, 'out-stdin');
    const r = await kiln(['build', '-', '--root', root, '--output', `type=local,dest=${out}`], { input: await readFile(join(EXAMPLES, 'diff.json'), 'utf8') });
    assert.equal(r.exitCode, 0, r.stderr);
    assert.deepEqual(await readdir(join(out, 'etc/app')), ['site.conf'], 'diff holds only what the upper added');
  });

  test('ignoreCache reruns that op', async () => {
    const def = { version: 1, ops: { a: { file: { actions: [{ input: -1, output: 0, mkfile: { path: '/a', mode: '0644', data: 'x' } }] }, metadata: { ignoreCache: true } } }, result: 'a' };
    const file = join(work, 'ignore.json');
    await writeFile(file, JSON.stringify(def));
    await kiln(['build', file, '--root', root]);
    const r = await kiln(['build', file, '--root', root, '--progress', 'rawjson']);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal([...vertices(r.stderr).values()][0]?.cached, false);
  });

  test('metadata: llb.customname names the step and progressGroup travels with it in rawjson', async () => {
    const group = { id: 'g1', name: 'Group one' };
    const mkfile = (path: string) => ({ input: -1, output: 0, mkfile: { path, mode: '0644', data: 'x' } });
    const def = {
      version: 1,
      ops: {
        a: { file: { actions: [mkfile('/grouped')] }, metadata: { description: { 'llb.customname': 'in a group' }, progressGroup: group } },
        b: { file: { actions: [mkfile('/alone')] } },
        m: { inputs: ['a', 'b'], merge: { inputs: [0, 1] } },
      },
      result: 'm',
    };
    const file = join(work, 'groups.json');
    await writeFile(file, JSON.stringify(def));
    const r = await kiln(['build', file, '--root', root, '--progress', 'rawjson']);
    assert.equal(r.exitCode, 0, r.stderr);
    const byName = verticesByName(r.stderr);
    assert.deepEqual(byName.get('in a group')?.progressGroup, group);
    assert.equal(byName.get('mkfile /alone')?.progressGroup, undefined);
  });

  test('an invalid file exits 2 with the JSON path, and no stack trace', async () => {
    const file = join(work, 'bad.json');
    await writeFile(file, JSON.stringify({ version: 1, ops: { a: { file: { actions: [{ input: -1, output: 0, mkdir: { path: '/x', mode: '0755', makeParent: true } }] } } }, result: 'a' }));
    const r = await kiln(['build', file, '--root', root]);
    assert.equal(r.exitCode, 2);
    assert.match(r.stderr, /ops\.a\.file\.actions\[0\]\.mkdir\.makeParent/);
    assert.match(r.stderr, /makeParents/, 'suggests the right field');
    assert.doesNotMatch(r.stderr, /^\s+at /m);
    assert.ok(r.stderr.includes(file), 'names the file');
  });

  test('a missing file exits 2; a bad flag exits 2', async () => {
    const r = await kiln(['build', join(work, 'nope.json'), '--root', root]);
    assert.equal(r.exitCode, 2);
    assert.match(r.stderr, /nope\.json: no such file/);
    const bad = await kiln(['build', SITE, '--root', root, '--output', 'type=zip,dest=x']);
    assert.equal(bad.exitCode, 2);
    assert.match(bad.stderr, /type must be local, tar, oci, docker or image/);
  });

  test('a failing op names the op and the reason, exits 1', async () => {
    const file = join(work, 'fail.json');
    await writeFile(file, JSON.stringify({ version: 1, ops: { broken: { file: { actions: [{ input: -1, output: 0, rm: { path: '/not-there' } }] } } }, result: 'broken' }));
    const r = await kiln(['build', file, '--root', root, '--progress', 'plain']);
    assert.equal(r.exitCode, 1);
    assert.match(r.stderr, /ERROR/);
    assert.match(r.stderr, /^error: .*broken.*not-there/m);
    assert.doesNotMatch(r.stderr, /^\s+at /m);
  });

  test('without runc there is no worker, and the error says why', async () => {
    const r = await kiln(['build', join(EXAMPLES, 'diff.json'), '--root', root], { env: { PATH: '/nonexistent' } });
    assert.equal(r.exitCode, 1);
    assert.match(r.stderr, /^error: no worker available: runc: unavailable \(runc not found/m);
    const workers = await kiln(['workers', '--root', root], { env: { PATH: '/nonexistent' } });
    assert.match(workers.stdout, /^runc\t0\tno\t.*unavailable: runc not found/m);
  });

  test('a build starts only the workers it uses: the default one does not connect to containerd', async () => {
    // A socket that counts connections stands in for containerd.
    const socket = join(work, 'counting.sock');
    let connections = 0;
    const server = createServer((conn) => {
      connections++;
      conn.destroy();
    });
    await new Promise<void>((resolve) => server.listen(socket, resolve));
    try {
      const r = await kiln(['build', join(EXAMPLES, 'diff.json'), '--root', root], { env: { KILN_CONTAINERD_ADDRESS: socket } });
      assert.equal(r.exitCode, 0, r.stderr);
      assert.equal(connections, 0, 'the containerd worker was never started');
      const workers = await kiln(['workers', '--root', root], { env: { KILN_CONTAINERD_ADDRESS: socket } });
      assert.match(workers.stdout, /^containerd\t1\tno\t.*unavailable: containerd at /m);
      assert.ok(connections > 0, '`kiln workers` starts every worker');
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  test('an unbound local source fails before running, naming the flag', async () => {
    const r = await kiln(['build', SITE, '--root', root]);
    assert.equal(r.exitCode, 1);
    assert.match(r.stderr, /--local context=DIR/);
  });
});
