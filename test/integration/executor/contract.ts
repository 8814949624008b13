/**
 * The executor contract suite: what every Executor must do, run against the
 * real runtime (runc.test.ts, containerd.test.ts) as root, over a busybox
 * rootfs: the process's sandbox (capabilities, seccomp, insecure mode,
 * cgroups), its streams and exit status, cancellation,
 * exec, and leaving nothing behind.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { access, copyFile, mkdir, mkdtemp, readdir, readFile, rm, rmdir, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { plainProcessMeta } from '../../../src/executor/oci-spec.js';
import { SECCOMP_PROFILE } from '../../../src/executor/process-facts.js';
import type { ContainerMount, ContainerRoot, Executor, ExitStatus, ProcessMeta, RunOptions } from '../../../src/executor/types.js';
import type { Mount } from '../../../src/snapshot/types.js';

/** Between SIGTERM and SIGKILL on cancel: long enough to tell the two apart, short for the suite. */
export const GRACE_MS = 2000;

export const META: ProcessMeta = plainProcessMeta(['/bin/true'], ['PATH=/bin']);

/**
 * What `probe` lists, once it is empty or after 3 s: an executor may remove
 * a finished run's records while the build goes on (containerd's does).
 */
export async function soonEmpty(probe: () => Promise<string[]>): Promise<string[]> {
  const deadline = Date.now() + 3000;
  for (;;) {
    const left = await probe();
    if (left.length === 0 || Date.now() > deadline) return left;
    await sleep(50);
  }
}

/** A Writable that keeps what it is given and can be slow to accept it. */
export function sink(delayMs = 0): { stream: Writable; text: () => string; bytes: () => number } {
  const chunks: Buffer[] = [];
  const stream = new Writable({
    highWaterMark: 1024,
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk);
      if (delayMs === 0) callback();
      else setTimeout(callback, delayMs);
    },
  });
  return {
    stream,
    text: () => Buffer.concat(chunks).toString('utf8'),
    bytes: () => chunks.reduce((n, c) => n + c.length, 0),
  };
}

export async function which(name: string): Promise<string> {
  for (const dir of (process.env['PATH'] ?? '').split(path.delimiter)) {
    const candidate = path.join(dir, name);
    if (await access(candidate).then(() => true, () => false)) return candidate;
  }
  throw new Error(`${name} not found in PATH (apt-get install busybox-static runc containerd)`);
}

/** Makes a busybox rootfs (with an empty /work) at `dir`. */
export async function busyboxRootfs(dir: string): Promise<void> {
  const busybox = await which('busybox');
  await mkdir(path.join(dir, 'bin'), { recursive: true });
  await mkdir(path.join(dir, 'work'));
  await copyFile(busybox, path.join(dir, 'bin', 'busybox'));
  const applets = execFileSync(busybox, ['--list'], { encoding: 'utf8' }).split('\n');
  for (const applet of applets) {
    if (applet !== '' && applet !== 'busybox') await symlink('busybox', path.join(dir, 'bin', applet));
  }
}

/** Whether process `pid` still runs (a zombie counts as gone). */
export async function alive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return stat !== '' && stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
}

export async function mountsUnder(dir: string): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info
    .split('\n')
    .map((line) => line.split(' ')[4] ?? '')
    .filter((m) => m.startsWith(`${dir}/`));
}

export const sh = (script: string, meta: Partial<ProcessMeta> = {}): Partial<ProcessMeta> => ({ args: ['/bin/sh', '-c', script], ...meta });
/** Runs until cancelled, then ends at once (a plain sleep as pid 1 would ignore SIGTERM and wait for the SIGKILL). */
export const idle = (): Partial<ProcessMeta> => sh('trap "exit 0" TERM; sleep 60 & wait');

/** An executor under test, with views into its runtime. */
export interface ExecutorFixture {
  readonly executor: Executor;
  /** Ids of the containers the runtime still knows. */
  containers(): Promise<string[]>;
  /** What the executor left in its state: files and mounts. Empty between runs. */
  leftovers(): Promise<string[]>;
  /** The host pid of running container `id`'s first process. */
  pid(id: string): Promise<number>;
  /** Whether container `id` is running. */
  running(id: string): Promise<boolean>;
  close(): Promise<void>;
}

/**
 * Runs the contract against the executor `open` makes (with GRACE_MS as its
 * kill grace period), given a temp dir of the suite's own.
 */
export function executorContract(name: string, open: (tmp: string) => Promise<ExecutorFixture>): void {
  describe(`${name} executor contract`, () => {
    let tmp: string;
    let rootfs: string;
    let fx: ExecutorFixture;
    let executor: Executor;
    let counter = 0;
    const root = (): ContainerRoot => ({ mounts: [{ type: 'bind', source: rootfs, readonly: false }], readonly: false });
    const nextId = (): string => `t${process.pid}-${++counter}`;

    interface Ran {
      status: ExitStatus;
      stdout: string;
      stderr: string;
    }

    async function run(
      meta: Partial<ProcessMeta>,
      extra: { mounts?: ContainerMount[]; root?: ContainerRoot; options?: Pick<RunOptions, 'signal' | 'started'>; id?: string } = {},
    ): Promise<Ran> {
      const out = sink();
      const err = sink();
      const status = await executor.run({
        id: extra.id ?? nextId(),
        root: extra.root ?? root(),
        mounts: extra.mounts ?? [],
        process: { meta: { ...META, ...meta }, stdout: out.stream, stderr: err.stream },
        ...extra.options,
      });
      return { status, stdout: out.text(), stderr: err.text() };
    }

    before(async () => {
      tmp = await mkdtemp(path.join(os.tmpdir(), `kiln-${name}-`));
      rootfs = path.join(tmp, 'rootfs');
      await busyboxRootfs(rootfs);
      fx = await open(tmp);
      executor = fx.executor;
    });
    after(async () => {
      await fx?.close();
      await rm(tmp, { recursive: true, force: true });
    });

    test('runs args with env and cwd, and leaves nothing behind', async () => {
      const r = await run(sh('echo "$GREETING"; pwd', { env: ['PATH=/bin', 'GREETING=hello there'], cwd: '/work' }));
      assert.deepEqual(r, { status: { exitCode: 0 }, stdout: 'hello there\n/work\n', stderr: '' });
      assert.equal(executor.name, name);
      assert.deepEqual(await soonEmpty(() => fx.containers()), []);
      assert.deepEqual(await soonEmpty(() => fx.leftovers()), []);
    });

    test('the process runs as the given uid, gid and additional gids', async () => {
      const r = await run(sh('id -u; id -g; id -G', { user: { uid: 1000, gid: 1001, additionalGids: [5, 20] } }));
      assert.equal(r.stdout, '1000\n1001\n1001 5 20\n');
    });

    test('hostname and /etc/hosts', async () => {
      const extraHosts = [
        { host: 'db', ip: '10.0.0.2' },
        { host: 'cache', ip: '10.0.0.3' },
      ];
      const r = await run(sh('hostname; cat /etc/hosts', { hostname: 'buildbox', extraHosts }));
      assert.equal(
        r.stdout,
        'buildbox\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.0.1\tbuildbox\n10.0.0.2\tdb\n10.0.0.3\tcache\n',
      );
      const byDefault = await run(sh('hostname'), { id: `kiln-0123456789ab-${process.pid}` });
      assert.equal(byDefault.stdout, 'kiln-0123456\n');
    });

    test('sandbox: default capabilities and no new privileges; insecure: every capability kiln holds', async () => {
      const script = sh('grep -E "^(CapEff|CapBnd|NoNewPrivs):" /proc/self/status');
      const sandboxed = await run(script);
      // The 14 default capabilities, as a mask.
      assert.equal(sandboxed.stdout, 'CapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\nNoNewPrivs:\t1\n');
      const own = /^CapBnd:\s*(\w+)$/m.exec(await readFile('/proc/self/status', 'utf8'))?.[1];
      const insecure = await run({ ...script, security: 'insecure' });
      assert.equal(insecure.stdout, `CapEff:\t${own}\nCapBnd:\t${own}\nNoNewPrivs:\t0\n`);
    });

    test('sandbox: a seccomp filter, and mounting is refused; insecure: no filter, mounting works, the host devices', async () => {
      assert.deepEqual(executor.seccomp, { enabled: true, profile: SECCOMP_PROFILE });
      const script = sh('grep "^Seccomp:" /proc/self/status; mount -t tmpfs none /work 2>&1 && echo mounted; ls /dev');
      const sandboxed = await run(script);
      const insecure = await run({ ...script, security: 'insecure' });
      const [sandboxStatus, sandboxMount, ...sandboxDev] = sandboxed.stdout.trim().split('\n');
      const [insecureStatus, insecureMount, ...insecureDev] = insecure.stdout.trim().split('\n');
      assert.deepEqual([sandboxStatus, sandboxMount], ['Seccomp:\t2', 'mount: permission denied (are you root?)']);
      assert.deepEqual([insecureStatus, insecureMount], ['Seccomp:\t0', 'mounted']);
      // Every device node at the top of the host's /dev, but the console and ptmx, which runc makes.
      const hostDevs = (await readdir('/dev', { withFileTypes: true }))
        .filter((e) => (e.isCharacterDevice() || e.isBlockDevice()) && e.name !== 'console' && e.name !== 'ptmx')
        .map((e) => e.name);
      const runtimeDefaults = ['full', 'null', 'random', 'tty', 'urandom', 'zero'];
      assert.deepEqual(hostDevs.filter((d) => !insecureDev.includes(d)), []);
      assert.deepEqual(sandboxDev.filter((d) => hostDevs.includes(d) && !runtimeDefaults.includes(d)), []);
      assert.ok(hostDevs.some((d) => !runtimeDefaults.includes(d)), 'the host has a device besides the defaults');
    });

    test('the container cgroup is made under cgroupParent', async () => {
      const parent = `kiln-test-parent-${process.pid}`;
      const id = nextId();
      try {
        const r = await run(sh('cat /proc/self/cgroup', { cgroupParent: `/${parent}/` }), { id });
        const lines = r.stdout.trim().split('\n');
        // cgroup v1: one line per hierarchy, `N:controllers:path`; every one that has controllers is ours.
        const v1 = lines.filter((l) => /^\d+:[^:]+:/.test(l));
        assert.ok(v1.length > 0, r.stdout);
        for (const line of v1) assert.match(line, new RegExp(`:/${parent}/${id}$`));
        const byDefault = await run(sh('grep :pids: /proc/self/cgroup'), { id: `${id}-default` });
        assert.match(byDefault.stdout, new RegExp(`:/kiln/${id}-default\n$`));
      } finally {
        // The parent is the caller's to remove: runc only removes the container's own cgroup.
        for (const hierarchy of await readdir('/sys/fs/cgroup')) await rmdir(path.join('/sys/fs/cgroup', hierarchy, parent)).catch(() => undefined);
      }
    });

    test('ulimits set the soft and hard limits', async () => {
      const r = await run(sh('ulimit -n; ulimit -Hn', { ulimits: [{ name: 'nofile', soft: 1000, hard: 2000 }] }));
      assert.equal(r.stdout, '1000\n2000\n');
    });

    test('a read-only bind cannot be written; a writable one writes to the host directory', async () => {
      const ro = await mkdtemp(path.join(tmp, 'ro-'));
      const rw = await mkdtemp(path.join(tmp, 'rw-'));
      await writeFile(path.join(ro, 'seen'), 'from the host\n');
      const r = await run(sh('cat /ro/seen; touch /ro/new || echo refused >&2; echo written > /rw/out'), {
        mounts: [
          { destination: '/ro', type: 'bind', source: ro, readonly: true },
          { destination: '/rw', type: 'bind', source: rw, readonly: false },
        ],
      });
      assert.equal(r.stdout, 'from the host\n');
      assert.match(r.stderr, /Read-only file system\nrefused\n$/);
      assert.deepEqual(await readdir(ro), ['seen']);
      assert.equal(await readFile(path.join(rw, 'out'), 'utf8'), 'written\n');
    });

    test('a read-only root bind cannot be written', async () => {
      const r = await run(sh('touch /work/new || echo refused'), { root: { mounts: [{ type: 'bind', source: rootfs, readonly: false }], readonly: true } });
      assert.equal(r.stdout, 'refused\n');
      await assert.rejects(access(path.join(rootfs, 'work', 'new')));
    });

    test('an overlay root is mounted for the run, takes the writes, and is unmounted after', async () => {
      const upper = path.join(tmp, 'upper');
      const work = path.join(tmp, 'work');
      await mkdir(upper);
      await mkdir(work);
      const overlay: Mount = { type: 'overlay', lower: [rootfs], upper: { dir: upper, work } };
      const r = await run(sh('echo layered > /work/made; ls /bin/sh'), { root: { mounts: [overlay], readonly: false } });
      assert.equal(r.stdout, '/bin/sh\n');
      assert.equal(await readFile(path.join(upper, 'work', 'made'), 'utf8'), 'layered\n');
      await assert.rejects(access(path.join(rootfs, 'work', 'made')));
      assert.deepEqual(await soonEmpty(() => fx.leftovers()), []);
    });

    test('exit codes pass through; a killed process reports its signal', async () => {
      assert.deepEqual((await run(sh('exit 0'))).status, { exitCode: 0 });
      assert.deepEqual((await run(sh('exit 3'))).status, { exitCode: 3 });
      const id = nextId();
      const killed = run({ args: ['/bin/sleep', '60'] }, {
        id,
        options: { started: () => void fx.pid(id).then((pid) => process.kill(pid, 'SIGKILL')) },
      });
      assert.deepEqual((await killed).status, { exitCode: 137, signal: 'SIGKILL' });
    });

    test('a command that cannot start is an error, not an exit code', async () => {
      await assert.rejects(run({ args: ['no-such-command'] }), (err: Error) => {
        assert.match(err.message, /^cannot run container "t\d+-\d+": .*exec: "no-such-command": executable file not found in \$PATH/);
        assert.equal((err as { code?: string }).code, 'E_EXECUTOR');
        return true;
      });
      assert.deepEqual(await soonEmpty(() => fx.containers()), []);
      assert.deepEqual(await soonEmpty(() => fx.leftovers()), []);
    });

    test('stdout and stderr are streamed separately, in order, as they come', async () => {
      const r = await run(sh('echo o1; echo e1 >&2; echo o2; echo e2 >&2; echo o3'));
      assert.equal(r.stdout, 'o1\no2\no3\n');
      assert.equal(r.stderr, 'e1\ne2\n');

      // Output reaches the stream while the process still runs.
      const abort = new AbortController();
      const first = new Writable({
        write(chunk: Buffer, _encoding, callback) {
          if (chunk.toString().includes('first')) abort.abort(new Error('seen'));
          callback();
        },
      });
      await assert.rejects(
        executor.run({
          id: nextId(),
          root: root(),
          mounts: [],
          process: { meta: { ...META, ...sh('echo first; trap "exit 0" TERM; sleep 60 & wait') }, stdout: first, stderr: sink().stream },
          signal: abort.signal,
        }),
        { message: 'seen' },
      );

      // stdin is piped in.
      const echoed = sink();
      await executor.run({
        id: nextId(),
        root: root(),
        mounts: [],
        process: { meta: { ...META, args: ['/bin/cat'] }, stdin: Readable.from(['line 1\n', 'line 2\n']), stdout: echoed.stream, stderr: sink().stream },
      });
      assert.equal(echoed.text(), 'line 1\nline 2\n');

      // A slow reader loses nothing.
      const slow = sink(1);
      const status = await executor.run({ id: nextId(), root: root(), mounts: [], process: { meta: { ...META, ...sh('head -c 300000 /dev/zero') }, stdout: slow.stream, stderr: sink().stream } });
      assert.deepEqual(status, { exitCode: 0 });
      assert.equal(slow.bytes(), 300000);
    });

    test('a sandboxed network has only loopback; host networking sees the host interfaces', async () => {
      const sandboxed = await run(sh('ls /sys/class/net; cat /sys/class/net/lo/operstate'));
      assert.equal(sandboxed.stdout, 'lo\nunknown\n');
      assert.equal((await run(sh('ls /sys/class/net', { network: 'none' }))).stdout, 'lo\n');
      const host = await run(sh('ls /sys/class/net', { network: 'host' }));
      const expected = (await readdir('/sys/class/net')).sort();
      assert.deepEqual(host.stdout.trim().split('\n').sort(), expected);
      assert.ok(expected.length > 1, 'the host has an interface besides lo');
    });

    test('cancellation stops the container within the grace period and rejects with the reason', async () => {
      const abort = new AbortController();
      const reason = new Error('build cancelled');
      // Measured from the abort, not from run(): starting a container under load takes its own, unrelated time.
      let abortedAt: number | undefined;
      const sinceAbort = (): number => Date.now() - (abortedAt ?? Number.NaN);
      // sleep as pid 1 ignores SIGTERM: it takes the SIGKILL after the grace period.
      const stubborn = run({ args: ['/bin/sleep', '60'] }, {
        options: {
          signal: abort.signal,
          started: () => {
            abortedAt = Date.now();
            abort.abort(reason);
          },
        },
      });
      await assert.rejects(stubborn, (err: unknown) => err === reason);
      const elapsed = sinceAbort();
      assert.ok(elapsed >= GRACE_MS && elapsed < GRACE_MS + 3000, `stopped ${elapsed} ms after the abort`);

      // A process that handles SIGTERM ends well before the grace period.
      const polite = new AbortController();
      abortedAt = undefined;
      const handled = run(idle(), {
        options: {
          signal: polite.signal,
          started: () =>
            setTimeout(() => {
              abortedAt = Date.now();
              polite.abort(reason);
            }, 200),
        },
      });
      await assert.rejects(handled, (err: unknown) => err === reason);
      assert.ok(sinceAbort() < GRACE_MS, `stopped ${sinceAbort()} ms after the abort`);

      assert.deepEqual(await soonEmpty(() => fx.containers()), []);
      assert.deepEqual(await soonEmpty(() => fx.leftovers()), []);
      await assert.rejects(run(sh('true'), { options: { signal: AbortSignal.abort(reason) } }), (err: unknown) => err === reason);
    });

    test('exec runs another process in the running container', async () => {
      const id = nextId();
      const abort = new AbortController();
      let execd: Promise<Ran> | undefined;
      const running = run(idle(), {
        id,
        options: {
          signal: abort.signal,
          started: () => {
            execd = (async () => {
              const out = sink();
              const err = sink();
              const status = await executor.exec(id, {
                meta: { ...META, ...sh('echo "$WHO in $(hostname)"; id -u; exit 4'), env: ['PATH=/bin', 'WHO=exec'], user: { uid: 33, gid: 33, additionalGids: [] } },
                stdout: out.stream,
                stderr: err.stream,
              });
              // A cancelled exec stops its own process, not the container.
              const stop = new AbortController();
              setTimeout(() => stop.abort(new Error('stop exec')), 100);
              await assert.rejects(executor.exec(id, { meta: { ...META, args: ['/bin/sleep', '60'] }, stdout: sink().stream, stderr: sink().stream }, { signal: stop.signal }), {
                message: 'stop exec',
              });
              assert.equal(await fx.running(id), true);
              abort.abort(new Error('done'));
              return { status, stdout: out.text(), stderr: err.text() };
            })();
          },
        },
      });
      await assert.rejects(running, { message: 'done' });
      assert.ok(execd !== undefined);
      assert.deepEqual(await execd, { status: { exitCode: 4 }, stdout: `exec in ${id.slice(0, 12)}\n33\n`, stderr: '' });
      await assert.rejects(
        executor.exec('no-such-container', { meta: META, stdout: sink().stream, stderr: sink().stream }),
        { message: 'cannot exec into container "no-such-container": it is not running' },
      );
      assert.deepEqual(await soonEmpty(() => fx.leftovers()), []);
    });
  });
}
