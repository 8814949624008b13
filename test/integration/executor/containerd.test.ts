/**
 * The containerd executor against a private containerd (test/support) and
 * the real runc shim, as root: the executor contract (contract.ts), then
 * what is containerd's own: cleaning up after a killed kiln process, a
 * containerd that restarts mid-run, and one that is not there.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { watch } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, readlink, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { createContainerdExecutor } from '../../../src/executor/containerd/executor.js';
import { isRuncLink } from '../../../src/executor/containerd/shim-runc.js';
import type { ContainerRoot, Executor, ExitStatus, ProcessMeta, RunOptions } from '../../../src/executor/types.js';
import { shimPids, startContainerd, type TestContainerd } from '../../support/containerd.js';
import { alive, busyboxRootfs, executorContract, GRACE_MS, idle, META, mountsUnder, sh, sink, soonEmpty } from './contract.js';

const EXECUTOR_MODULE = new URL('../../../src/executor/containerd/executor.js', import.meta.url).href;
/** A namespace of this test process: runc state of the shims lives per namespace on the host, shared by every containerd. */
const NAMESPACE = `kiln-test-${process.pid}`;

/** An executor's anchor container (and its directory) lives as long as the executor: not a run's leftover. */
const isAnchor = (name: string): boolean => name.includes('kiln-anchor-');
/** Nor is the link to the runc its tasks run. */
const isExecutors = (name: string): boolean => isAnchor(name) || isRuncLink(name);

/** `ctr tasks ls` as id -> { pid, status }, anchors left out unless asked for. */
async function tasks(ctd: TestContainerd, { anchors = false } = {}): Promise<Map<string, { pid: number; status: string }>> {
  const lines = (await ctd.ctr(['tasks', 'ls'], NAMESPACE)).split('\n').slice(1);
  const result = new Map<string, { pid: number; status: string }>();
  for (const line of lines) {
    const [id, pid, status] = line.trim().split(/\s+/);
    if (id === undefined || id === '' || pid === undefined || status === undefined || (isAnchor(id) && !anchors)) continue;
    result.set(id, { pid: Number(pid), status });
  }
  return result;
}

const containerIds = async (ctd: TestContainerd, { anchors = false } = {}): Promise<string[]> =>
  (await ctd.ctr(['containers', 'ls', '-q'], NAMESPACE)).split('\n').filter((l) => l !== '' && (anchors || !isAnchor(l)));
/**
 * The executor's directories in `stateDir` that belong to runs: not its
 * anchor's, nor the one it makes ahead for the next process (only FIFOs in it).
 */
async function stateEntries(stateDir: string): Promise<string[]> {
  const entries: string[] = [];
  for (const name of await readdir(stateDir)) {
    const content = await readdir(path.join(stateDir, name)).catch(() => []);
    if (isExecutors(name) || content.sort().join(' ') === 'stderr stdin stdout') continue;
    entries.push(name);
  }
  return entries;
}

executorContract('containerd', async (tmp) => {
  const ctd = await startContainerd();
  const stateDir = path.join(tmp, 'state');
  try {
    const executor = await createContainerdExecutor({ address: ctd.address, namespace: NAMESPACE, stateDir, killGraceMs: GRACE_MS });
    return {
      executor,
      containers: async () => [...(await containerIds(ctd)), ...(await tasks(ctd)).keys()],
      leftovers: async () => [...(await stateEntries(stateDir)), ...(await mountsUnder(ctd.dir)).filter((m) => !isAnchor(m))],
      pid: async (id) => (await tasks(ctd)).get(id)?.pid ?? -1,
      running: async (id) => (await tasks(ctd)).get(id)?.status === 'RUNNING',
      close: async () => {
        // The executor's anchor and its shim go first; the daemon after.
        await executor.close?.();
        await ctd.close();
      },
    };
  } catch (err) {
    await ctd.close();
    throw err;
  }
});

describe('containerd executor', () => {
  let tmp: string;
  let rootfs: string;
  let stateDir: string;
  let ctd: TestContainerd;
  let executor: Executor;
  let counter = 0;
  const root = (): ContainerRoot => ({ mounts: [{ type: 'bind', source: rootfs, readonly: false }], readonly: false });
  const nextId = (): string => `c${process.pid}-${++counter}`;

  /** Runs `meta` on the suite's executor, or on `extra.on`. */
  function run(
    meta: Partial<ProcessMeta>,
    extra: { root?: ContainerRoot; options?: Pick<RunOptions, 'signal' | 'started'>; id?: string; on?: Executor } = {},
  ): Promise<{ status: ExitStatus; stdout: string }> {
    const out = sink();
    return (extra.on ?? executor)
      .run({ id: extra.id ?? nextId(), root: extra.root ?? root(), mounts: [], process: { meta: { ...META, ...meta }, stdout: out.stream, stderr: sink().stream }, ...extra.options })
      .then((status) => ({ status, stdout: out.text() }));
  }

  /**
   * Calls `act` once containerd has started creating the task of container
   * `id` (it makes the task's bundle directory first): stopping containerd
   * then cuts the create off, before anything started. Returns what `act`
   * returned (once it was called) and a function to stop watching.
   */
  function whenTaskCreateStarts(id: string, act: () => Promise<void>): { acted: () => Promise<void> | undefined; stop: () => void } {
    const bundles = path.join(ctd.dir, 'state', 'io.containerd.runtime.v2.task', NAMESPACE);
    let acted: Promise<void> | undefined;
    const watcher = watch(bundles, (_event, name) => {
      if (name === id) acted ??= act();
    });
    return { acted: () => acted, stop: () => watcher.close() };
  }

  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'kiln-containerd-'));
    rootfs = path.join(tmp, 'rootfs');
    stateDir = path.join(tmp, 'state');
    await busyboxRootfs(rootfs);
    ctd = await startContainerd();
    executor = await createContainerdExecutor({ address: `unix://${ctd.address}`, namespace: NAMESPACE, stateDir, killGraceMs: GRACE_MS });
  });
  after(async () => {
    await executor?.close?.();
    await ctd?.close();
    await rm(tmp, { recursive: true, force: true });
  });

  test('a new executor removes what a killed kiln process left, and nothing of a live one', async () => {
    const upper = path.join(tmp, 'crash-upper');
    const work = path.join(tmp, 'crash-work');
    await mkdir(upper);
    await mkdir(work);
    const overlay: ContainerRoot = { mounts: [{ type: 'overlay', lower: [rootfs], upper: { dir: upper, work } }], readonly: false };
    const script = `
      import { createContainerdExecutor } from ${JSON.stringify(EXECUTOR_MODULE)};
      import { Writable } from 'node:stream';
      const [address, namespace, stateDir, roots] = process.argv.slice(1);
      const executor = await createContainerdExecutor({ address, namespace, stateDir });
      const discard = new Writable({ write: (_c, _e, cb) => cb() });
      const meta = ${JSON.stringify({ ...META, args: ['/bin/sleep', '60'] })};
      for (const [id, root] of Object.entries(JSON.parse(roots))) {
        void executor.run({ id, root, mounts: [], process: { meta, stdout: discard, stderr: discard }, started: () => process.stdout.write(id + '\\n') });
      }
    `;
    const roots = { [`crash-overlay-${process.pid}`]: overlay, [`crash-bind-${process.pid}`]: root() };
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, ctd.address, NAMESPACE, stateDir, JSON.stringify(roots)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    const ready = new Set([(await lines.next()).value, (await lines.next()).value]);
    assert.deepEqual(ready, new Set(Object.keys(roots)));
    const before = await tasks(ctd);
    const pids = Object.keys(roots).map((id) => before.get(id)?.pid ?? -1);
    child.kill('SIGKILL');
    await once(child, 'exit');
    assert.equal((await stateEntries(stateDir)).length, 2);
    assert.equal((await containerIds(ctd, { anchors: true })).filter(isAnchor).length, 1, "the killed process's anchor");

    // A container of this (live) process runs across the recovery.
    const liveId = nextId();
    const abort = new AbortController();
    let liveStarted: (() => void) | undefined;
    const live = run(idle(), { id: liveId, root: overlay, options: { signal: abort.signal, started: () => liveStarted?.() } });
    await new Promise<void>((resolve) => (liveStarted = resolve));

    await createContainerdExecutor({ address: ctd.address, namespace: NAMESPACE, stateDir });
    assert.deepEqual(await containerIds(ctd), [liveId]);
    assert.deepEqual([...(await tasks(ctd)).keys()], [liveId]);
    assert.equal((await stateEntries(stateDir)).length, 1);
    assert.equal((await containerIds(ctd, { anchors: true })).filter(isAnchor).length, 1, "only this process's anchor is left");
    for (const pid of pids) assert.equal(await alive(pid), false, `container process ${pid} is gone`);

    abort.abort(new Error('end'));
    await assert.rejects(live, { message: 'end' });
    assert.deepEqual(await containerIds(ctd), []);
    assert.deepEqual(await stateEntries(stateDir), []);
    assert.deepEqual((await mountsUnder(ctd.dir)).filter((m) => !isAnchor(m)), []);
  });

  test('the runs of an executor share one shim, which close() stops with its anchor', async () => {
    const anchors = async (): Promise<string[]> => (await containerIds(ctd, { anchors: true })).filter(isAnchor);
    const othersAnchors = await anchors();
    const own = await createContainerdExecutor({ address: ctd.address, namespace: NAMESPACE, stateDir, killGraceMs: GRACE_MS });
    const before = await shimPids('-namespace', NAMESPACE);
    const shimOf = async (): Promise<number[]> => (await shimPids('-namespace', NAMESPACE)).filter((pid) => !before.includes(pid));
    const seen: number[][] = [];
    for (let i = 0; i < 3; i++) {
      const id = nextId();
      const { status } = await run(sh('true'), { on: own, id, options: { started: () => void shimOf().then((pids) => seen.push(pids)) } });
      assert.deepEqual(status, { exitCode: 0 });
    }
    const between = await shimOf();
    assert.equal(between.length, 1, 'one shim, alive between runs');
    for (const pids of seen) assert.deepEqual(pids, between, 'every run in the same shim');
    assert.equal((await anchors()).length, othersAnchors.length + 1, 'its anchor, while open');
    await own.close?.();
    assert.deepEqual(await shimOf(), []);
    assert.deepEqual(await anchors(), othersAnchors);
  });

  test('the first runs of a new executor may come at once: one shim starts, and every run works', async () => {
    // Each round is a new group with no shim yet, where two tasks starting
    // the shim together race on its socket.
    for (let round = 0; round < 3; round++) {
      const own = await createContainerdExecutor({ address: ctd.address, namespace: NAMESPACE, stateDir, killGraceMs: GRACE_MS });
      try {
        const runs = Array.from({ length: 4 }, async () => (await run(sh('true'), { on: own })).status);
        assert.deepEqual(await Promise.all(runs), Array.from({ length: 4 }, () => ({ exitCode: 0 })));
      } finally {
        await own.close?.();
      }
    }
  });

  test('a run ends once its process exited: nothing of its root mounted, output and changes complete', async () => {
    // The run goes on once the process exited and its output ended, while
    // containerd deletes the task; what it needs must be done by then. runc
    // mounts the root in the container's mount namespace, gone with its process.
    const lines = Array.from({ length: 2000 }, (_, k) => `${k + 1}\n`).join('');
    for (let i = 0; i < 5; i++) {
      const upper = path.join(tmp, `released-upper-${i}`);
      const work = path.join(tmp, `released-work-${i}`);
      await mkdir(upper);
      await mkdir(work);
      const overlay: ContainerRoot = { mounts: [{ type: 'overlay', lower: [rootfs], upper: { dir: upper, work } }], readonly: false };
      const id = nextId();
      const r = await run(sh(`seq 1 2000; echo ${i} > /written`), { id, root: overlay });
      assert.deepEqual(await mountsUnder(ctd.dir).then((ms) => ms.filter((m) => m.includes(id))), [], 'rootfs unmounted');
      const overlays = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').filter((m) => m.includes(`upperdir=${upper}`));
      assert.deepEqual(overlays, [], 'no mount of the root on the host');
      assert.equal(r.stdout, lines, 'all of the output');
      assert.equal(await readFile(path.join(upper, 'written'), 'utf8'), `${i}\n`);
    }
  });

  test('a containerd restart before the process starts: the run is retried once and works', async () => {
    const warnings: string[] = [];
    const quiet = (): void => {};
    const logger = { error: quiet, info: quiet, debug: quiet, trace: quiet, warn: (f: object | string, m?: string) => void warnings.push(m ?? String(f)) };
    const own = await createContainerdExecutor({ address: ctd.address, namespace: NAMESPACE, stateDir, killGraceMs: GRACE_MS, logger });
    try {
      // The first run makes the anchor, and the namespace's bundle directory watched below.
      assert.deepEqual((await run(sh('true'), { on: own })).status, { exitCode: 0 });
      const id = nextId();
      const restart = whenTaskCreateStarts(id, () => ctd.restart());
      let stdout: string;
      try {
        const r = await run(sh(`echo ran >> /ran-${id}; echo ran`), { on: own, id });
        assert.deepEqual(r.status, { exitCode: 0 });
        stdout = r.stdout;
      } finally {
        restart.stop();
        await restart.acted();
      }
      assert.notEqual(restart.acted(), undefined, 'containerd was restarted during the run');
      assert.equal(stdout, 'ran\n');
      assert.equal(await readFile(path.join(rootfs, `ran-${id}`), 'utf8'), 'ran\n', 'the process ran once');
      assert.ok(warnings.includes('containerd went away before the container started; running it again'), warnings.join('; '));
    } finally {
      await own.close?.();
    }
    assert.deepEqual(await containerIds(ctd), []);
  });

  // The timeout tells a run that ends at the cancellation from one that
  // only ends when its wait for containerd gives up (30 s).
  test('a run cancelled while it waits for containerd to come back ends with the cancellation', { timeout: 15_000 }, async () => {
    const own = await createContainerdExecutor({ address: ctd.address, namespace: NAMESPACE, stateDir, killGraceMs: GRACE_MS });
    try {
      assert.deepEqual((await run(sh('true'), { on: own })).status, { exitCode: 0 });
      const id = nextId();
      const abort = new AbortController();
      // containerd stops during the task create and stays away: the run
      // waits for it to come back (up to a call's deadline, 30 s) to run
      // again, until the build is cancelled.
      const stop = whenTaskCreateStarts(id, () => ctd.stop().then(() => void setTimeout(() => abort.abort(new Error('cancelled')), 300)));
      try {
        await assert.rejects(run(sh('true'), { on: own, id, options: { signal: abort.signal } }), { message: 'cancelled' });
      } finally {
        stop.stop();
        await stop.acted();
        await ctd.start();
      }
      // The next run removes what the cancelled one left, and works.
      assert.deepEqual((await run(sh('true'), { on: own })).status, { exitCode: 0 });
      assert.ok(!(await containerIds(ctd)).includes(id));
    } finally {
      await own.close?.();
    }
  });

  test('a containerd restart fails the running op clearly; the next run works and removes the leftover', async () => {
    const id = nextId();
    let pid = -1;
    const running = run(idle(), {
      id,
      options: {
        started: () => {
          void (async () => {
            pid = (await tasks(ctd)).get(id)?.pid ?? -1;
            await ctd.restart();
          })();
        },
      },
    });
    await assert.rejects(running, (err: Error) => {
      assert.match(err.message, new RegExp(`^containerd restarted while running container "${id}" \\(the connection to ${ctd.address} was lost: .*\\); run the build again$`));
      assert.equal((err as { code?: string }).code, 'E_EXECUTOR');
      return true;
    });
    assert.equal(await alive(pid), true, 'the task outlives the daemon');

    assert.deepEqual(await run(sh('echo again')), { status: { exitCode: 0 }, stdout: 'again\n' });
    // The leftover went before the run; the run's own container goes after it, in the background.
    assert.equal(await alive(pid), false);
    assert.deepEqual(await soonEmpty(() => containerIds(ctd)), []);
    assert.deepEqual(await soonEmpty(async () => [...(await tasks(ctd)).keys()]), []);
    assert.deepEqual(await soonEmpty(() => stateEntries(stateDir)), []);
  });

  test('a program that never closes its executor still exits after its runs', async () => {
    const script = `
      import { createContainerdExecutor } from ${JSON.stringify(EXECUTOR_MODULE)};
      import { Writable } from 'node:stream';
      const [address, namespace, stateDir, id, rootfs] = process.argv.slice(1);
      const executor = await createContainerdExecutor({ address, namespace, stateDir });
      const discard = new Writable({ write: (_c, _e, cb) => cb() });
      const root = { mounts: [{ type: 'bind', source: rootfs, readonly: false }], readonly: false };
      const status = await executor.run({ id, root, mounts: [], process: { meta: ${JSON.stringify(META)}, stdout: discard, stderr: discard } });
      process.stdout.write(JSON.stringify(status));
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, ctd.address, NAMESPACE, stateDir, nextId(), rootfs], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
    clearTimeout(timer);
    assert.deepEqual({ code, signal, out }, { code: 0, signal: null, out: '{"exitCode":0}' });
    // What it left (its anchor) goes with the next executor, as after a crash.
    const next = await createContainerdExecutor({ address: ctd.address, namespace: NAMESPACE, stateDir });
    await next.close?.();
  });

  /** The runc binary the shim was told to run for container `id`'s task (its bundle's options), read while it runs; '' for its own. */
  async function runcOfTask(on: Executor, id: string): Promise<string> {
    let binary: string | undefined;
    const bundle = path.join(ctd.dir, 'state', 'io.containerd.runtime.v2.task', NAMESPACE, id);
    const started = async (): Promise<void> => {
      const options = await readFile(path.join(bundle, 'options.json'), 'utf8').catch(() => '{}');
      binary = (JSON.parse(options) as { binary_name?: string }).binary_name ?? '';
    };
    let reading: Promise<void> | undefined;
    const { status } = await run({ args: ['/bin/sleep', '0.2'] }, { id, on, options: { started: () => void (reading = started()) } });
    await reading;
    assert.deepEqual(status, { exitCode: 0 });
    assert.ok(binary !== undefined);
    return binary;
  }

  test('the shim runs the sealed copy of runc, through a link in the state directory, which close() removes', async () => {
    const own = await createContainerdExecutor({ address: ctd.address, namespace: NAMESPACE, stateDir, killGraceMs: GRACE_MS });
    const binary = await runcOfTask(own, nextId());
    assert.equal(path.dirname(binary), stateDir);
    assert.ok(isRuncLink(path.basename(binary)));
    const copy = await readlink(binary);
    assert.match(copy, new RegExp(`^/proc/${process.pid}/fd/\\d+$`));
    assert.match(await readlink(copy), /^\/memfd:runc_cloned:/, 'a memfd, as runc names its own copies');
    await own.close?.();
    assert.equal(await readlink(binary).catch(() => 'gone'), 'gone');
  });

  test('without the sealed copy, the shim runs its own runc', async () => {
    const own = await createContainerdExecutor({ address: ctd.address, namespace: NAMESPACE, stateDir, killGraceMs: GRACE_MS, sealedRunc: false });
    assert.equal(await runcOfTask(own, nextId()), '');
    await own.close?.();
  });

  test('a socket nobody listens on is reported as such', async () => {
    // The socket of a daemon that was killed stays; connecting to it is refused.
    const socket = path.join(tmp, 'stale.sock');
    const daemon = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(socket)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    await once(daemon, 'exit');
    await assert.rejects(createContainerdExecutor({ address: `unix://${socket}`, stateDir }), (err: Error) => {
      assert.equal(err.message, `containerd at ${socket} is not reachable: nothing listens on ${socket} (is containerd running?)`);
      return true;
    });
  });

  test('a containerd that does not answer is reported with its socket', async () => {
    const socket = path.join(tmp, 'no.sock');
    await assert.rejects(createContainerdExecutor({ address: socket, stateDir }), (err: Error) => {
      assert.equal(err.message, `containerd at ${socket} is not reachable: no socket at ${socket} (is containerd running, and is that its address?)`);
      assert.equal((err as { code?: string }).code, 'E_EXECUTOR');
      return true;
    });
  });
});
