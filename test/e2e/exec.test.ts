/**
 * exec ops in real containers, end to end through the CLI, on each worker
 * (runc, and containerd through its API and runc v2 shim, against a private
 * containerd): every Meta field checked from inside, mounts, outputs, exit
 * codes, logs, entitlements, caching, cancellation and crash recovery.
 */
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { runtimeDirPath } from '../../src/executor/runtime-dir.js';
import { startContainerd, type TestContainerd } from '../support/containerd.js';
import { busyboxOps, WORKERS, workerSuite } from './workers.js';
import { assertSameTree, EXAMPLES, kiln as runKiln, mountsUnder, removeDir, startKiln as startKilnProcess, tempDir, vertices } from './harness.js';


/** An exec op on `base` with a scratch mount at /out that becomes the result. */
function probe(script: string, extra: Record<string, unknown> = {}, meta: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    inputs: ['base'],
    exec: {
      meta: { args: ['/bin/sh', '-c', script], ...meta },
      mounts: [
        { dest: '/', input: 0, output: -1, readonly: true },
        { dest: '/out', input: -1, output: 0 },
      ],
      ...extra,
    },
  };
}

/** The workers every test below runs on. */
for (const workerId of WORKERS) {
describe(`exec ops on the ${workerId} worker`, () => {
  const suite = workerSuite(workerId, 'exec');
  const { workerArgs } = suite;
  let n = 0;
  const kiln = (args: readonly string[], options?: Parameters<typeof runKiln>[1]) => runKiln([...args, ...workerArgs(args[0])], options);
  const startKiln = (args: readonly string[]) => startKilnProcess([...args, ...workerArgs(args[0])]);
  /** Containers this worker still has (runc's list, or containerd's containers and tasks in kiln's namespace). */
  const containers = async (): Promise<string> => {
    if (suite.containerd === undefined) return (await execa('runc', ['--root', join(runtimeDirPath({ root: suite.root, executor: 'runc' }), 'runc'), 'list', '-q'])).stdout.trim();
    return `${await suite.containerd.ctr(['containers', 'ls', '-q'], 'kiln')}${await suite.containerd.ctr(['tasks', 'ls', '-q'], 'kiln')}`.trim();
  };

  /** Builds `ops` with result `result` and returns the output dir and the run. */
  const build = async (ops: Record<string, unknown>, result: unknown, args: readonly string[] = []) => {
    const file = join(suite.work, `def${n}.json`);
    const out = join(suite.work, `out${n++}`);
    await writeFile(file, JSON.stringify({ version: 1, ops: { ...(await busyboxOps()), ...ops }, result }));
    const run = await kiln(['build', file, '--root', suite.root, '--local', 'tools=/bin', '--output', `type=local,dest=${out}`, '--progress', 'rawjson', ...args]);
    return { out, run, file };
  };
  const read = (dir: string, name: string) => readFile(join(dir, name), 'utf8');

  test('builds a busybox rootfs from nothing: the system mount points stay, as BuildKit leaves them, other stubs go', async () => {
    const { out, run } = await build({}, 'base');
    assert.equal(run.exitCode, 0, run.stderr);
    assert.deepEqual((await readdir(out)).sort(), ['bin', 'dev', 'proc', 'sys'], 'no /etc/hosts or /etc/resolv.conf stub, nor their /etc');
    assert.ok((await readdir(join(out, 'bin'))).includes('sh'));
  });

  test('args, env, cwd, hostname, extra hosts and ulimits are what the op says', async () => {
    const script = 'echo "$@" > /out/args; echo "$GREETING" > /out/env; echo "$PATH" > /out/path; pwd > /out/cwd; hostname > /out/hostname; cat /etc/hosts > /out/hosts; ulimit -n > /out/nofile; ls /sys/class/net > /out/net';
    const { out, run } = await build(
      {
        facts: probe(
          script,
          {},
          {
            args: ['/bin/sh', '-c', script, 'sh', 'first', 'second'],
            env: ['GREETING=hello world'],
            cwd: '/work/dir',
            hostname: 'kiln-test',
            extraHosts: [{ host: 'db.internal', ip: '10.1.2.3' }],
            ulimit: [{ name: 'nofile', soft: 321, hard: 654 }],
          },
        ),
      },
      'facts',
    );
    assert.equal(run.exitCode, 0, run.stderr);
    assert.equal(await read(out, 'args'), 'first second\n');
    assert.equal(await read(out, 'env'), 'hello world\n');
    assert.equal(await read(out, 'path'), '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n', 'a default PATH');
    assert.equal(await read(out, 'cwd'), '/work/dir\n', 'a missing cwd is created');
    assert.equal(await read(out, 'hostname'), 'kiln-test\n');
    assert.match(await read(out, 'hosts'), /^10\.1\.2\.3\s+db\.internal$/m);
    assert.equal(await read(out, 'nofile'), '321\n');
    assert.equal(await read(out, 'net'), 'eth0\nlo\n', 'the sandbox has a network of its own (test/e2e/network.test.ts)');
  });

  test('a cwd through symlinks is resolved inside the rootfs, a dangling one created where it points', async () => {
    const links = {
      inputs: ['base'],
      exec: { meta: { args: ['/bin/sh', '-c', 'mkdir /app && ln -s app/sub /rel && ln -s ../../../../app /escape'] }, mounts: [{ dest: '/', input: 0, output: 0 }] },
    };
    const use = (cwd: string) => ({ inputs: ['links'], exec: { meta: { args: ['/bin/sh', '-c', 'pwd > /app/pwd; touch here'], cwd }, mounts: [{ dest: '/', input: 0, output: 0 }] } });
    const dangling = await build({ links, use: use('/rel/deeper') }, 'use');
    assert.equal(dangling.run.exitCode, 0, dangling.run.stderr);
    assert.equal(await read(dangling.out, 'app/pwd'), '/app/sub/deeper\n');
    const escaping = await build({ links, use: use('/escape') }, 'use');
    assert.equal(escaping.run.exitCode, 0, escaping.run.stderr);
    assert.equal(await read(escaping.out, 'app/pwd'), '/app\n', 'a link cannot lead the cwd out of the rootfs');
  });

  test('network none has only loopback; kiln workers shows runc as the default', async () => {
    const { out, run } = await build({ none: probe('ls /sys/class/net > /out/net', { network: 'none' }) }, 'none');
    assert.equal(run.exitCode, 0, run.stderr);
    assert.equal(await read(out, 'net'), 'lo\n');
    const workers = await kiln(['workers', '--root', suite.root]);
    assert.equal(workers.exitCode, 0, workers.stderr);
    assert.match(workers.stdout, /^runc\t0\tyes\trunc\t(overlayfs|native)\tcni \(bridge kiln0, [\d.]+\/16, NAT to the host's network\)\tlinux\/\w+\t.*\tavailable$/m);
    if (suite.containerd !== undefined) assert.match(workers.stdout, /^containerd\t1\tno\tcontainerd\t.*\tavailable$/m);
  });

  test('user by uid:gid and by name from the rootfs, with supplementary groups as BuildKit gives them', async () => {
    const users = {
      inputs: ['base'],
      file: {
        actions: [
          { input: 0, output: -1, mkdir: { path: '/etc', mode: '0755', makeParents: true } },
          { input: 1, output: -1, mkfile: { path: '/etc/passwd', mode: '0644', data: 'root:x:0:0::/root:/bin/sh\nbuilder:x:1234:2345::/home/builder:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n' } },
          { input: 2, output: 0, mkfile: { path: '/etc/group', mode: '0644', data: 'root:x:0:\nwheel:x:10:root\nbuilders:x:2345:\nextra:x:3000:builder\nnogroup:x:65534:\n' } },
        ],
      },
    };
    // The kernel's own list of the process's supplementary groups.
    const groups = 'set -- $(grep ^Groups: /proc/self/status); shift; echo "groups $*"';
    const exec = (script: string, user?: string) => ({
      inputs: ['users'],
      exec: { meta: { args: ['/bin/sh', '-c', script], ...(user === undefined ? {} : { user }) }, mounts: [{ dest: '/', input: 0, output: -1, readonly: true }, { dest: '/tmp', input: -1, output: 0 }] },
    });
    const { out, run } = await build(
      {
        users,
        byName: exec(`id -u; id -g; id -G; ${groups}`, 'builder'),
        byId: exec(`id -u; id -g; ${groups}`, '4321:8765'),
        nobody: exec(`echo nobody; ${groups}`, 'nobody'),
        root: exec(`echo root; ${groups}`),
        all: { inputs: ['byName', 'byId', 'nobody', 'root'], merge: { inputs: [0, 1, 2, 3] } },
      },
      'all',
    );
    assert.equal(run.exitCode, 0, run.stderr);
    // The ops run in parallel: read each one's output on its own.
    const byVertex = new Map<string, string>();
    for (const line of run.stderr.split('\n').filter((l) => l.includes('"type":"log"'))) {
      const event = JSON.parse(line) as { vertex: string; data: string };
      byVertex.set(event.vertex, `${byVertex.get(event.vertex) ?? ''}${event.data}`);
    }
    const outputs = [...byVertex.values()];
    assert.ok(outputs.includes('1234\n2345\n2345 3000\ngroups 2345 3000\n'), `name resolved in the rootfs, with its groups: ${JSON.stringify(outputs)}`);
    assert.ok(outputs.includes('4321\n8765\ngroups 8765\n'), JSON.stringify(outputs));
    // A user no group lists still has its primary group as a supplementary one.
    assert.ok(outputs.includes('nobody\ngroups 65534\n'), JSON.stringify(outputs));
    // The default user is root looked up like any other: it gets the groups that list it.
    assert.ok(outputs.includes('root\ngroups 0 10\n'), JSON.stringify(outputs));
    assert.ok(out);
  });

  test('readonly mounts cannot be written; selectors mount a path of the input; several outputs', async () => {
    const multi = {
        multi: {
          inputs: ['base'],
          exec: {
            meta: { args: ['/bin/sh', '-c', 'touch /ro/x 2>/a/touch-error; echo $? > /a/touch-code; ls /sel > /a/sel; echo b > /b/file'] },
            mounts: [
              { dest: '/', input: 0, output: -1, readonly: true },
              { dest: '/ro', input: 0, output: -1, readonly: true },
              { dest: '/sel', input: 0, output: -1, readonly: true, selector: '/bin' },
              { dest: '/a', input: -1, output: 0 },
              { dest: '/b', input: -1, output: 1 },
            ],
          },
        },
    };
    const { out, run } = await build(multi, { op: 'multi', output: 1 });
    assert.equal(run.exitCode, 0, run.stderr);
    assert.deepEqual(await readdir(out), ['file'], 'output 1 is the /b mount');
    const { out: outA, run: runA } = await build(multi, { op: 'multi', output: 0 });
    assert.equal(runA.exitCode, 0, runA.stderr);
    assert.notEqual((await read(outA, 'touch-code')).trim(), '0');
    assert.match(await read(outA, 'touch-error'), /Read-only file system/);
    const sel = (await read(outA, 'sel')).split('\n');
    assert.ok(sel.includes('busybox') && !sel.includes('bin'), 'the selector mounted /bin itself');
  });

  test('a tmpfs mount is in memory, sized, and absent from the output', async () => {
    const { out, run } = await build(
      {
        scratchy: {
          inputs: ['base'],
          exec: {
            meta: { args: ['/bin/sh', '-c', 'echo data > /scratch/file && grep " /scratch " /proc/mounts > /work/mounts && touch /work/done'], cwd: '/work' },
            mounts: [
              { dest: '/', input: 0, output: 0 },
              { dest: '/scratch', type: 'tmpfs', tmpfs: { size: 1048576 } },
            ],
          },
        },
      },
      'scratchy',
    );
    assert.equal(run.exitCode, 0, run.stderr);
    assert.match(await read(out, 'work/mounts'), /^tmpfs \/scratch tmpfs .*size=1024k/m);
    await assert.rejects(readdir(join(out, 'scratch')), 'the mount point stub is removed too');
  });

  test('validExitCodes accepts a listed code; any other fails with the op, the code and the last lines', async () => {
    const ok = await build({ three: probe('echo fine > /out/x; exit 3', {}, { validExitCodes: [0, 3] }) }, 'three');
    assert.equal(ok.run.exitCode, 0, ok.run.stderr);
    const failing = await kiln(['build', join(EXAMPLES, 'failing-step.json'), '--root', suite.root, '--local', 'tools=/bin', '--progress', 'plain']);
    assert.equal(failing.exitCode, 1);
    assert.match(failing.stderr, /process "\/bin\/sh -c echo checking for cc\.\.\. none; echo 'error: no C compiler found' >&2; exit 3" did not complete successfully: exit code 3/);
    assert.match(failing.stderr, /error: no C compiler found/);
    assert.match(failing.stderr, /configure/);
    assert.doesNotMatch(failing.stderr, /^\s+at /m);
  });

  test('stdout and stderr stream into progress as log events', async () => {
    const { run } = await build({ talk: probe('echo to-stdout; echo to-stderr >&2; touch /out/x') }, 'talk');
    assert.equal(run.exitCode, 0, run.stderr);
    const logs = run.stderr.split('\n').filter((l) => l.includes('"type":"log"')).map((l) => JSON.parse(l) as { stream: number; data: string; vertex: string });
    assert.ok(logs.some((l) => l.stream === 1 && l.data.includes('to-stdout')));
    assert.ok(logs.some((l) => l.stream === 2 && l.data.includes('to-stderr')));
  });

  test('host networking and insecure mode are refused before anything runs unless allowed', async () => {
    const host = await build({ net: probe('ls /sys/class/net > /out/net', { network: 'host' }) }, 'net');
    assert.equal(host.run.exitCode, 1);
    assert.match(host.run.stderr, /--allow network\.host/);
    assert.equal(vertices(host.run.stderr).size, 0, 'no op started');
    const insecure = await build({ priv: probe('true', { security: 'insecure' }) }, 'priv');
    assert.match(insecure.run.stderr, /--allow security\.insecure/);
    const allowed = await kiln(['build', host.file, '--root', suite.root, '--local', 'tools=/bin', '--allow', 'network.host', '--output', `type=local,dest=${join(suite.work, 'hostnet')}`]);
    assert.equal(allowed.exitCode, 0, allowed.stderr);
    const hostIfaces = (await readdir('/sys/class/net')).sort().join('\n');
    assert.equal((await read(join(suite.work, 'hostnet'), 'net')).trim(), hostIfaces);
  });

  test('roots the runtime cannot mount as they are: a stack too deep for one mount call, a root selector', async () => {
    // Under a 250-character root, a dozen layers overflow the page of options one mount call takes.
    const deepRoot = join(suite.work, 'r'.repeat(250));
    const steps: Record<string, unknown> = {};
    for (let i = 0; i < 16; i++) {
      steps[`step${i}`] = {
        inputs: [i === 0 ? 'base' : `step${i - 1}`],
        exec: { meta: { args: ['/bin/sh', '-c', `echo ${i} > /step${i}`] }, mounts: [{ dest: '/', input: 0, output: 0 }] },
      };
    }
    // The root is /bin of the input: busybox is at /busybox in there.
    steps['sub'] = {
      inputs: ['step15'],
      exec: {
        meta: { args: ['/busybox', 'sh', '-c', '/busybox ls / > /listing'] },
        mounts: [{ dest: '/', input: 0, output: 0, selector: '/bin' }],
      },
    };
    const file = join(suite.work, 'deep.json');
    const out = join(suite.work, 'deep-out');
    await writeFile(file, JSON.stringify({ version: 1, ops: { ...(await busyboxOps()), ...steps }, result: 'sub' }));
    const run = await kiln(['build', file, '--root', deepRoot, '--local', 'tools=/bin', '--output', `type=local,dest=${out}`]);
    assert.equal(run.exitCode, 0, run.stderr);
    const listing = (await read(out, 'bin/listing')).split('\n').filter((l) => l !== '');
    assert.ok(listing.includes('busybox') && !listing.includes('bin'), 'the selector made /bin the root');
    assert.ok(!(await readdir(join(out, 'bin'))).includes('etc'), 'no /etc/hosts stub (nor its /etc) in the selected root');
    for (const kept of ['proc', 'dev', 'sys']) assert.ok((await readdir(join(out, 'bin'))).includes(kept), `the ${kept} mount point stays in the selected root, as BuildKit leaves it`);
    for (let i = 0; i < 16; i++) assert.equal((await read(out, `step${i}`)).trim(), `${i}`);
    assert.deepEqual((await readdir(out)).sort(), ['bin', 'dev', 'proc', 'sys', ...Array.from({ length: 16 }, (_, i) => `step${i}`)].sort(), 'no other stubs');
    assert.deepEqual(await mountsUnder(deepRoot), []);
    await removeDir(deepRoot);
  });

  test('a cached rerun runs no container', async () => {
    const first = await build({ stamp: probe('date +%s%N > /out/stamp') }, 'stamp');
    assert.equal(first.run.exitCode, 0, first.run.stderr);
    const again = await kiln(['build', first.file, '--root', suite.root, '--local', 'tools=/bin', '--output', `type=local,dest=${join(suite.work, 'again')}`, '--progress', 'rawjson']);
    assert.equal(again.exitCode, 0, again.stderr);
    for (const v of vertices(again.stderr).values()) assert.equal(v.cached, true, `${v.name} cached`);
    assert.equal(await read(join(suite.work, 'again'), 'stamp'), await read(first.out, 'stamp'));
  });

  // SIGHUP: the terminal or ssh session the build ran in went away.
  for (const [signal, exitCode, sleep] of [['SIGTERM', 143, 63], ['SIGHUP', 129, 61]] as const) {
    test(`${signal} stops the running container, cleans up, and exits ${exitCode}`, async () => {
      const file = join(suite.work, `sleep-${signal}.json`);
      await writeFile(file, JSON.stringify({ version: 1, ops: { ...(await busyboxOps()), nap: probe(`sleep ${sleep} # ${workerId}\ntouch /out/x`) }, result: 'nap' }));
      const child = startKiln(['build', file, '--root', suite.root, '--local', 'tools=/bin', '--progress', 'rawjson']);
      await waitFor(async () => (await containers()) !== '');
      const started = Date.now();
      child.kill(signal);
      const r = await child;
      assert.equal(r.exitCode, exitCode, r.stderr);
      assert.ok(Date.now() - started < 20_000, 'stopped within the grace period');
      assert.equal(await containers(), '');
      assert.deepEqual(await mountsUnder(suite.root), []);
      const sleeping = await execa('pgrep', ['-f', `sleep ${sleep} # ${workerId}`], { reject: false });
      assert.equal(sleeping.stdout.trim(), '', 'no process left');
    });
  }

  test('after kill -9 mid-exec the next build cleans the stale container and succeeds', async () => {
    const file = join(suite.work, 'sleep-kill.json');
    await writeFile(file, JSON.stringify({ version: 1, ops: { ...(await busyboxOps()), nap: probe(`sleep 67 # ${workerId}\ntouch /out/x`) }, result: 'nap' }));
    const child = startKiln(['build', file, '--root', suite.root, '--local', 'tools=/bin']);
    await waitFor(async () => (await containers()) !== '');
    child.kill('SIGKILL');
    await child;
    const r = await build({ after: probe('echo ok > /out/ok') }, 'after');
    assert.equal(r.run.exitCode, 0, r.run.stderr);
    assert.equal(await containers(), '', 'no stale container');
    assert.deepEqual(await mountsUnder(suite.root), [], 'no stale mount');
    const sleeping = await execa('pgrep', ['-f', `sleep 67 # ${workerId}`], { reject: false });
    assert.equal(sleeping.stdout.trim(), '', 'the orphaned process was killed');
  });
});
}

async function waitFor(check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('timed out waiting');
}

describe('the worker matrix', () => {
  let work: string;
  let containerd: TestContainerd;
  before(async () => {
    work = await tempDir('matrix');
    containerd = await startContainerd();
  });
  after(async () => {
    await containerd.close();
    await removeDir(work);
  });

  test('the same LLB gives byte-identical trees on runc and on containerd', async () => {
    const outs: string[] = [];
    for (const args of [['--worker', 'runc'], ['--worker', 'containerd']]) {
      const out = join(work, `out-${args[1] ?? ''}`);
      const r = await runKiln(['build', join(EXAMPLES, 'multi-stage.json'), '--root', join(work, `root-${args[1] ?? ''}`), '--local', 'tools=/bin', '--containerd-address', containerd.address, '--output', `type=local,dest=${out}`, ...args]);
      assert.equal(r.exitCode, 0, r.stderr);
      outs.push(out);
    }
    await assertSameTree(outs[0] ?? '', outs[1] ?? '');
    await assertSameTree(join(outs[0] ?? '', 'bin'), join(outs[1] ?? '', 'bin'));
  });

  test('with runc missing from PATH the containerd worker becomes the default', async () => {
    // A PATH with everything of /usr/bin and /usr/sbin but runc.
    const bin = join(work, 'bin-without-runc');
    await mkdir(bin);
    for (const dir of ['/usr/sbin', '/usr/bin']) {
      for (const name of await readdir(dir)) if (name !== 'runc') await symlink(join(dir, name), join(bin, name)).catch(() => undefined);
    }
    const env = { PATH: bin };
    const root = join(work, 'root-no-runc');
    const workers = await runKiln(['workers', '--root', root, '--containerd-address', containerd.address], { env });
    assert.match(workers.stdout, /^runc\t0\tno\t.*unavailable: runc not found/m);
    assert.match(workers.stdout, /^containerd\t1\tyes\tcontainerd\t/m);
    const r = await runKiln(['build', join(EXAMPLES, 'busybox.json'), '--root', root, '--local', 'tools=/bin', '--containerd-address', containerd.address, '--output', `type=local,dest=${join(work, 'no-runc')}`], { env });
    assert.equal(r.exitCode, 0, r.stderr);
    assert.ok((await readdir(join(work, 'no-runc', 'bin'))).includes('sh'));
  });

  test('op constraints pick the worker; an impossible one is refused with the reasons', async () => {
    const ops = JSON.parse(await readFile(join(EXAMPLES, 'busybox.json'), 'utf8')) as { ops: Record<string, { constraints?: string[] }> };
    const base = ops.ops['base'];
    assert.ok(base !== undefined);
    base.constraints = ['executor==containerd'];
    const file = join(work, 'constrained.json');
    await writeFile(file, JSON.stringify(ops));
    const r = await runKiln(['build', file, '--root', join(work, 'root-c'), '--local', 'tools=/bin', '--containerd-address', containerd.address, '--progress', 'rawjson']);
    assert.equal(r.exitCode, 0, r.stderr);
    base.constraints = ['labels.gpu==yes'];
    await writeFile(file, JSON.stringify(ops));
    const refused = await runKiln(['build', file, '--root', join(work, 'root-c'), '--local', 'tools=/bin', '--containerd-address', containerd.address]);
    assert.equal(refused.exitCode, 1);
    assert.match(refused.stderr, /op "base".*no worker available: runc: constraint labels\.gpu==yes does not hold; containerd: constraint labels\.gpu==yes does not hold/);
  });
});
