/**
 * What the CLI says when a flag or an argument is not what it expects, as
 * a person trying kiln for the first time runs into it: each message names
 * the problem and what would be right.
 */
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { kiln, removeDir, tempDir } from './harness.js';
import { busyboxOps, shStep } from './workers.js';

describe('CLI messages', () => {
  let work: string;
  let root: string;
  let def: string;
  before(async () => {
    work = await tempDir('messages');
    root = join(work, 'root');
    def = join(work, 'def.json');
    await writeFile(def, JSON.stringify({ version: 1, ops: { f: { file: { actions: [{ input: -1, output: 0, mkfile: { path: '/a', mode: '0644', data: 'a\n' } }] } } }, result: 'f' }));
  });
  after(async () => removeDir(work));

  test('kiln build DIR says it is a directory', async () => {
    const dir = join(work, 'project');
    await mkdir(dir);
    const r = await kiln(['build', dir, '--root', root]);
    assert.equal(r.exitCode, 2);
    assert.equal(r.stderr, `error: cannot read definition ${dir}: it is a directory, not a file`);
  });

  test('--worker with an id no worker has says so and lists the ids', async () => {
    const r = await kiln(['build', def, '--root', root, '--worker', 'nosuch']);
    assert.equal(r.exitCode, 1);
    assert.match(r.stderr, /^error: no worker has the id "nosuch" \(the workers are runc, containerd\)$/m);
  });

  test('output messages say "an OCI output" and "an image output"', async () => {
    const oci = await kiln(['build', def, '--root', root, '-o', `type=oci,dest=${join(work, 'o.tar')},bogus=1`]);
    assert.equal(oci.exitCode, 2);
    assert.match(oci.stderr, /unknown key "bogus" \(an OCI output takes type, dest, name, /);
    const image = await kiln(['build', def, '--root', root, '-o', 'type=image']);
    assert.equal(image.exitCode, 2);
    assert.match(image.stderr, /: name is required for an image output$/m);
  });

  test('KILN_TTY_LOG_LINES must be a number of lines', async () => {
    const r = await kiln(['build', def, '--root', root], { env: { KILN_TTY_LOG_LINES: 'lots' } });
    assert.equal(r.exitCode, 2);
    assert.equal(r.stderr, 'error: KILN_TTY_LOG_LINES "lots": expected a whole number of lines (default 6)');
  });

  test('kiln workers takes --snapshotter, as build does', async () => {
    const r = await kiln(['workers', '--root', root, '--snapshotter', 'native']);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.match(r.stdout, /^runc\t0\tyes\trunc\tnative\t/m);
    const bad = await kiln(['workers', '--root', root, '--snapshotter', 'zfs']);
    assert.equal(bad.exitCode, 2);
    assert.match(bad.stderr, /--snapshotter <name>' argument 'zfs' is invalid/);
  });

  test('--ssh ID=SOCKET,raw=false is a socket and an option, not two paths', async () => {
    const socket = join(work, 'agent.sock');
    const server: Server = createServer((c) => c.end());
    await new Promise<void>((done) => server.listen(socket, done));
    try {
      const sshDef = join(work, 'ssh.json');
      const step = shStep('test -S /run/agent && echo socket > /out/seen', [{ type: 'ssh', dest: '/run/agent', ssh: { id: 'id' } }]);
      await writeFile(sshDef, JSON.stringify({ version: 1, ops: { ...(await busyboxOps()), step }, result: 'step' }));
      const out = join(work, 'ssh-out');
      for (const raw of ['false', 'true']) {
        const r = await kiln(['build', sshDef, '--root', root, '--local', 'tools=/bin', '--ssh', `id=${socket},raw=${raw}`, '-o', `type=local,dest=${out}`, '--no-cache']);
        assert.equal(r.exitCode, 0, r.stderr);
      }
      const bad = await kiln(['build', sshDef, '--root', root, '--local', 'tools=/bin', '--ssh', `id=${socket},raw=perhaps`]);
      assert.equal(bad.exitCode, 2);
      assert.match(bad.stderr, /raw must be true or false, not "perhaps"/);
    } finally {
      await new Promise((done) => server.close(done));
    }
  });
});
