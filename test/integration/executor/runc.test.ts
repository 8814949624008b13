/**
 * The runc executor against the real runc, as root: the executor contract
 * (contract.ts), then what is runc's own: the cleanup of what a killed kiln
 * process left behind (bundles, rootfs mounts, a former state directory),
 * a missing seccomp profile, a missing runc, and runc's own failures told
 * from the process's exit code, a full disk named.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { createRuncExecutor } from '../../../src/executor/runc.js';
import { spawnerPid } from '../../../src/spawner.js';
import type { ContainerMount, ContainerRoot, Executor, ProcessMeta, RunOptions } from '../../../src/executor/types.js';
import type { Logger } from '../../../src/log.js';
import { currentOwner, processStartTime } from '../../../src/owner.js';
import { alive, busyboxRootfs, executorContract, GRACE_MS, idle, META, mountsUnder, sink, which } from './contract.js';

const EXECUTOR_MODULE = new URL('../../../src/executor/runc.js', import.meta.url).href;

executorContract('runc', async (tmp) => {
  const runc = await which('runc');
  const stateDir = path.join(tmp, 'state');
  const runcCli = (...args: string[]): string => execFileSync(runc, ['--root', path.join(stateDir, 'runc'), ...args], { encoding: 'utf8' });
  const state = (id: string): { pid: number; status: string } => JSON.parse(runcCli('state', id)) as { pid: number; status: string };
  return {
    executor: await createRuncExecutor({ stateDir, killGraceMs: GRACE_MS }),
    containers: async () => runcCli('list', '-q').split('\n').filter((l) => l !== ''),
    leftovers: async () => [...(await readdir(path.join(stateDir, 'bundles'))), ...(await mountsUnder(stateDir))],
    pid: async (id) => state(id).pid,
    running: async (id) => state(id).status === 'running',
    close: async () => {},
  };
});

describe('runc executor', () => {
  let tmp: string;
  let rootfs: string;
  let stateDir: string;
  let runc: string;
  let counter = 0;
  const root = (): ContainerRoot => ({ mounts: [{ type: 'bind', source: rootfs, readonly: false }], readonly: false });
  const runcCli = (...args: string[]): string => execFileSync(runc, ['--root', path.join(stateDir, 'runc'), ...args], { encoding: 'utf8' });
  const nextId = (): string => `r${process.pid}-${++counter}`;

  function run(executor: Executor, meta: Partial<ProcessMeta>, extra: { root: ContainerRoot; options: Pick<RunOptions, 'signal' | 'started'>; id: string }): Promise<unknown> {
    return executor.run({ id: extra.id, root: extra.root, mounts: [], process: { meta: { ...META, ...meta }, stdout: sink().stream, stderr: sink().stream }, ...extra.options });
  }

  before(async () => {
    runc = await which('runc');
    tmp = await mkdtemp(path.join(os.tmpdir(), 'kiln-runc-'));
    rootfs = path.join(tmp, 'rootfs');
    stateDir = path.join(tmp, 'state');
    await busyboxRootfs(rootfs);
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  test('a new executor cleans what a killed kiln process left, and nothing of a live one', async () => {
    const upper = path.join(tmp, 'crash-upper');
    const work = path.join(tmp, 'crash-work');
    await mkdir(upper);
    await mkdir(work);
    const overlay: ContainerRoot = { mounts: [{ type: 'overlay', lower: [rootfs], upper: { dir: upper, work } }], readonly: false };
    // One container whose root runc mounts, one whose bundle then disappears.
    const script = `
      import { createRuncExecutor } from ${JSON.stringify(EXECUTOR_MODULE)};
      import { Readable, Writable } from 'node:stream';
      const [stateDir, roots] = process.argv.slice(1);
      const executor = await createRuncExecutor({ stateDir });
      const discard = new Writable({ write: (_c, _e, cb) => cb() });
      const meta = ${JSON.stringify({ ...META, args: ['/bin/sleep', '60'] })};
      for (const [id, root] of Object.entries(JSON.parse(roots))) {
        void executor.run({ id, root, mounts: [], process: { meta, stdout: discard, stderr: discard }, started: () => process.stdout.write(id + '\\n') });
      }
    `;
    const roots = { 'crash-overlay': overlay, 'crash-bind': root() };
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, stateDir, JSON.stringify(roots)], { stdio: ['ignore', 'pipe', 'inherit'] });
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    const ready = new Set([(await lines.next()).value, (await lines.next()).value]);
    assert.deepEqual(ready, new Set(Object.keys(roots)));
    const pids = Object.keys(roots).map((id) => (JSON.parse(runcCli('state', id)) as { pid: number }).pid);
    const crashedOwner = `${child.pid}-${processStartTime(child.pid ?? 0)}`;
    child.kill('SIGKILL');
    await once(child, 'exit');
    // runc mounts an overlay root inside the container's mount namespace: nothing of it is left on the host.
    assert.deepEqual(await mountsUnder(stateDir), []);
    // Bundles are named OWNER-ID: the crashed process's own, then the container's.
    const bundles = await readdir(path.join(stateDir, 'bundles'));
    assert.deepEqual(bundles.sort(), Object.keys(roots).map((id) => `${crashedOwner}-${id}`).sort());
    await rm(path.join(stateDir, 'bundles', `${crashedOwner}-crash-bind`), { recursive: true });

    // A container of this (live) process runs across the recovery.
    const liveId = nextId();
    const abort = new AbortController();
    let liveStarted: (() => void) | undefined;
    const executor = await createRuncExecutor({ stateDir, killGraceMs: GRACE_MS });
    const live = run(executor, idle(), {
      id: liveId,
      root: overlay,
      options: { signal: abort.signal, started: () => liveStarted?.() },
    });
    await new Promise<void>((resolve) => (liveStarted = resolve));

    await createRuncExecutor({ stateDir });
    assert.equal(runcCli('list', '-q'), `${liveId}\n`);
    assert.deepEqual(await readdir(path.join(stateDir, 'bundles')), [`${currentOwner()}-${liveId}`]);
    const stale = (await mountsUnder(stateDir)).filter((m) => !m.includes(liveId));
    assert.deepEqual(stale, []);
    for (const pid of pids) assert.equal(await alive(pid), false, `container process ${pid} is gone`);

    abort.abort(new Error('end'));
    await assert.rejects(live, { message: 'end' });
    assert.equal(runcCli('list', '-q'), '');
    assert.deepEqual(await mountsUnder(stateDir), []);
  });

  test('without a seccomp profile sandboxed containers run unfiltered, saying so; a broken profile stops the executor', async () => {
    const missing = path.join(tmp, 'no-seccomp.json');
    const warnings: unknown[] = [];
    const ignore = (): void => {};
    const logger: Logger = { error: ignore, warn: (fields) => warnings.push(fields), info: ignore, debug: ignore, trace: ignore };
    const executor = await createRuncExecutor({ stateDir, seccompProfile: missing, logger });
    assert.deepEqual(executor.seccomp, { enabled: false, reason: `no profile at ${missing}` });
    assert.deepEqual(warnings, [{ reason: `no profile at ${missing}` }]);
    const out = sink();
    const status = await executor.run({ id: nextId(), root: root(), mounts: [], process: { meta: { ...META, args: ['/bin/grep', '^Seccomp:', '/proc/self/status'] }, stdout: out.stream, stderr: sink().stream } });
    assert.deepEqual(status, { exitCode: 0 });
    assert.equal(out.text(), 'Seccomp:\t0\n');

    const broken = path.join(tmp, 'broken-seccomp.json');
    await writeFile(broken, '{"defaultAction":"SCMP_ACT_ERRNO"}');
    await assert.rejects(createRuncExecutor({ stateDir, seccompProfile: broken }), {
      code: 'E_EXECUTOR',
      message: `seccomp profile ${broken}: syscalls must be an array; fix or remove the file`,
    });
  });

  test('a missing runc is reported with what to install', async () => {
    await assert.rejects(createRuncExecutor({ stateDir, runcPath: path.join(tmp, 'no-runc') }), {
      message: `runc not found at ${path.join(tmp, 'no-runc')}; install it (apt-get install runc) or give the right path`,
    });
    const savedPath = process.env['PATH'];
    process.env['PATH'] = tmp;
    try {
      await assert.rejects(createRuncExecutor({ stateDir }), { code: 'E_EXECUTOR', message: 'runc not found in PATH; install it (apt-get install runc)' });
    } finally {
      process.env['PATH'] = savedPath;
    }
  });
  test("runc failing before the process starts is the runtime's error, not an exit code of the step", async () => {
    // runc exits 255 when it cannot make the container; a log it could not write says nothing.
    const fake = path.join(tmp, 'fake-runc');
    await writeFile(fake, '#!/bin/sh\ncase " $* " in *" run "*) echo "something is wrong" >&2; echo "fake runc: out of cheese" >&2; exit 255;; esac\n', { mode: 0o755 });
    const executor = await createRuncExecutor({ stateDir: path.join(tmp, 'fake-state'), runcPath: fake });
    const id = nextId();
    await assert.rejects(run(executor, {}, { root: root(), options: {}, id }), {
      code: 'E_EXECUTOR',
      message: `cannot run container "${id}": fake-runc exited with code 255 before the container's process started: fake runc: out of cheese`,
    });
  });

  test('runc failing on a full filesystem names it', async () => {
    // A rootfs on a tmpfs with no inode left: runc cannot make the mountpoint of a mount.
    const small = path.join(tmp, 'small');
    await mkdir(small);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m,nr_inodes=4096', 'kiln-test-full', small]);
    try {
      const fullRoot = path.join(small, 'rootfs');
      await busyboxRootfs(fullRoot);
      execFileSync('sh', ['-c', 'i=0; while touch "$1/f$i" 2>/dev/null; do i=$((i+1)); done', 'sh', small]);
      const executor = await createRuncExecutor({ stateDir });
      const id = nextId();
      const mounts: ContainerMount[] = [{ destination: '/newdir', type: 'tmpfs' }];
      const proc = { meta: META, stdout: sink().stream, stderr: sink().stream };
      const err = await executor.run({ id, root: { mounts: [{ type: 'bind', source: fullRoot, readonly: false }], readonly: false }, mounts, process: proc }).then(
        () => assert.fail('ran'),
        (e: unknown) => e as { code: string; message: string },
      );
      assert.equal(err.code, 'E_EXECUTOR');
      assert.match(err.message, new RegExp(`^cannot run container "${id}": .*no space left on device.* \\(the filesystem at ${small} \\(tmpfs on kiln-test-full, holding [^)]*\\) has no inodes left\\)$`));
    } finally {
      execFileSync('umount', [small]);
    }
  });

  test("a former state directory (an older kiln's, under its root) is cleaned and removed", async () => {
    const former = path.join(tmp, 'former');
    const dead = path.join(former, 'bundles', '4194303-1-kiln-old');
    await mkdir(dead, { recursive: true });
    await mkdir(path.join(former, 'runc'));
    await writeFile(path.join(dead, 'config.json'), '{"process":{"env":["TOKEN=secret"]}}');
    await createRuncExecutor({ stateDir, formerStateDir: former });
    assert.equal(existsSync(former), false);
  });

  test('containers run through the resident spawner, and through a new one once it is killed; cancel still stops them', async () => {
    const executor = await createRuncExecutor({ stateDir, killGraceMs: 500 });
    const ran = async (script: string): Promise<{ status: unknown; stdout: string; runcParent: number | undefined }> => {
      const out = sink();
      let runcParent: number | undefined;
      const id = nextId();
      const status = await executor.run({
        id,
        root: root(),
        mounts: [],
        process: { meta: { ...META, args: ['/bin/sh', '-c', script] }, stdout: out.stream, stderr: sink().stream },
        // runc's pid file names the container's process; its parent is runc, whose parent is the spawner.
        started: () => {
          const pid = JSON.parse(runcCli('state', id)).pid as number;
          const ppid = (p: number): number => Number(/^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1]);
          runcParent = ppid(ppid(pid));
        },
      });
      return { status, stdout: out.text(), runcParent };
    };
    const first = await ran('sleep 1; echo one; exit 3');
    // Started by the first container (a build whose steps are all cached starts none, and no spawner).
    const spawner = spawnerPid();
    assert.ok(spawner !== undefined, 'started with the first container');
    assert.deepEqual([first.status, first.stdout, first.runcParent], [{ exitCode: 3 }, 'one\n', spawner]);
    process.kill(spawner, 'SIGKILL');
    await new Promise((resolve) => setTimeout(resolve, 100));
    const second = await ran('sleep 1; echo two');
    assert.deepEqual([second.status, second.stdout], [{ exitCode: 0 }, 'two\n']);
    const replaced = spawnerPid();
    assert.ok(replaced !== undefined && replaced !== spawner && second.runcParent === replaced);
    const controller = new AbortController();
    const id = nextId();
    const cancelled = run(executor, idle(), { root: root(), id, options: { signal: controller.signal, started: () => controller.abort(new Error('stop')) } });
    await assert.rejects(cancelled, /stop/);
    assert.deepEqual(runcCli('list', '-q').split('\n').filter((l) => l === id), [], 'the container is gone');
    await executor.close?.();
  });
});
