/**
 * The containerd executor's own logic (the shim group, the retry after a
 * restart, cleanup) against a scripted fake client: fast, no daemon, no
 * root. What containerd and the shim do is the contract suite's business
 * (containerd.test.ts).
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { PassThrough } from 'node:stream';
import { ContainerdError, runcOptions, type ContainerdApi, type ContainerRecord, type ProcessIo, type ProcessRef, type TaskOptions, type TaskState } from '../../../src/executor/containerd/client.js';
import { ShimRunc, type TaskRunc } from '../../../src/executor/containerd/shim-runc.js';
import { containerdExecutorOver, SHIM_GROUP_ANNOTATION } from '../../../src/executor/containerd/executor.js';
import type { Executor } from '../../../src/executor/types.js';
import { META, sink } from '../../integration/executor/contract.js';

const lost = (): ContainerdError => new ContainerdError('unreachable', 'containerd is not reachable: gone', 'gone', undefined);
const notFound = (): ContainerdError => new ContainerdError('not-found', 'containerd: not found', 'not found', undefined);

/** Answers of the fake, per call: a function of the call's arguments that may throw (a rejection). */
type Script = Partial<Record<keyof ContainerdApi, (...args: never[]) => unknown>>;

/**
 * A containerd that keeps containers and tasks in maps, logs every call
 * (`method id`), announces task deletes, and lets a test replace any
 * call's answer.
 */
class FakeContainerd implements ContainerdApi {
  readonly socket = '/fake/containerd.sock';
  readonly namespace = 'kiln-test';
  readonly calls: string[] = [];
  readonly containers = new Map<string, Record<string, string>>();
  readonly tasks = new Map<string, TaskState['status']>();
  /** The runtime options each task was created with. */
  readonly taskOptions = new Map<string, TaskOptions | undefined>();
  script: Script = {};
  #onDelete: ((id: string) => void) | undefined;
  readonly #exits = new Map<string, (code: number) => void>();
  readonly #codes = new Map<string, number>();
  closed = false;

  async #call<T>(method: keyof ContainerdApi, id: string, real: () => T | Promise<T>, ...args: unknown[]): Promise<T> {
    this.calls.push(`${method} ${id}`);
    await Promise.resolve();
    const scripted = this.script[method] as ((...a: unknown[]) => unknown) | undefined;
    if (scripted !== undefined) return (await scripted(id, ...args)) as T;
    return real();
  }

  version(): Promise<{ version: string; revision: string }> {
    return this.#call('version', '', () => ({ version: 'fake', revision: '' }));
  }
  createContainer(o: { id: string; labels: Readonly<Record<string, string>>; runtime: string; specJson: string }): Promise<void> {
    return this.#call('createContainer', o.id, () => {
      if (this.containers.has(o.id)) throw new ContainerdError('already-exists', 'exists', 'exists', undefined);
      const annotations = (JSON.parse(o.specJson) as { annotations?: Record<string, string> }).annotations ?? {};
      this.containers.set(o.id, annotations);
    });
  }
  listContainers(): Promise<ContainerRecord[]> {
    return this.#call('listContainers', '', () => []);
  }
  deleteContainer(id: string): Promise<void> {
    return this.#call('deleteContainer', id, () => {
      if (!this.containers.delete(id)) throw notFound();
    });
  }
  createTask(id: string, rootfs: readonly unknown[], io: ProcessIo, options?: TaskOptions): Promise<void> {
    this.taskOptions.set(id, options);
    return this.#call('createTask', id, () => void this.tasks.set(id, 'CREATED'), rootfs, io);
  }
  exec(): Promise<void> {
    return this.#call('exec', '', () => undefined);
  }
  start(ref: ProcessRef): Promise<void> {
    return this.#call('start', ref.containerId, () => {
      this.tasks.set(ref.containerId, 'RUNNING');
      // The process exits at once with code 0, unless the test holds it.
      if (!this.script.wait) setImmediate(() => this.#exit(ref.containerId, 0));
    });
  }
  closeStdin(): Promise<void> {
    return Promise.resolve();
  }
  wait(ref: ProcessRef): Promise<number> {
    return this.#call('wait', ref.containerId, () => {
      const code = this.#codes.get(ref.containerId);
      // A process that exited already answers at once, as containerd's Wait does.
      if (this.tasks.get(ref.containerId) === 'STOPPED' && code !== undefined) return code;
      return new Promise<number>((resolve) => this.#exits.set(ref.containerId, resolve));
    });
  }
  kill(ref: ProcessRef): Promise<void> {
    return this.#call('kill', ref.containerId, () => this.#exit(ref.containerId, 137));
  }
  resizePty(ref: ProcessRef, size: { readonly columns: number; readonly rows: number }): Promise<void> {
    return this.#call('resizePty', ref.containerId, () => undefined, size);
  }
  getTask(id: string): Promise<TaskState> {
    return this.#call('getTask', id, () => {
      const status = this.tasks.get(id);
      if (status === undefined) throw notFound();
      return { containerId: id, pid: 1, status };
    });
  }
  delete(ref: ProcessRef): Promise<void> {
    return this.#call('delete', ref.containerId, () => {
      if (!this.tasks.delete(ref.containerId)) throw notFound();
      this.#onDelete?.(ref.containerId);
    });
  }
  watchTaskDeletes(onDelete: (containerId: string) => void): () => void {
    this.#onDelete = onDelete;
    return () => (this.#onDelete = undefined);
  }
  close(): void {
    this.closed = true;
  }

  #exit(id: string, code: number): void {
    this.tasks.set(id, 'STOPPED');
    this.#codes.set(id, code);
    this.#exits.get(id)?.(code);
  }
}

describe('containerd executor logic (fake client)', () => {
  let tmp: string;
  let stateDir: string;
  let fake: FakeContainerd;
  let executor: Executor;
  let n = 0;
  const warnings: string[] = [];
  const quiet = (): void => {};
  const logger = { error: quiet, info: quiet, debug: quiet, trace: quiet, warn: (_f: unknown, m?: string) => void warnings.push(m ?? '') } as never;

  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'kiln-ctd-logic-'));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });
  beforeEach(async () => {
    stateDir = await mkdtemp(path.join(tmp, 'state-'));
    fake = new FakeContainerd();
    warnings.length = 0;
    executor = containerdExecutorOver(fake, { stateDir, capabilities: [], seccomp: { filter: undefined, status: { enabled: false, reason: 'test' } }, killGraceMs: 100, logger });
  });

  const run = (id = `c${++n}`, signal?: AbortSignal) =>
    executor.run({
      id,
      root: { mounts: [{ type: 'bind', source: tmp, readonly: false }], readonly: false },
      mounts: [],
      process: { meta: META, stdout: sink().stream, stderr: sink().stream },
      ...(signal === undefined ? {} : { signal }),
    });

  it('makes the anchor first, puts every container in its shim group, and removes all on close', async () => {
    assert.deepEqual(await run('c-one'), { exitCode: 0 });
    assert.deepEqual(await run('c-two'), { exitCode: 0 });
    const anchor = [...fake.containers.keys()].find((id) => id.startsWith('kiln-anchor-'));
    assert.ok(anchor !== undefined);
    assert.equal(fake.calls[0], `createContainer ${anchor}`);
    assert.equal(fake.calls[1], `createTask ${anchor}`);
    assert.equal(fake.calls.filter((c) => c.startsWith('createTask')).length, 3);
    await executor.close?.();
    assert.deepEqual([...fake.containers.keys()], [], 'the runs\' containers and the anchor are gone');
    assert.deepEqual(await readdir(stateDir), [], 'and our directories');
    assert.ok(fake.closed);
  });

  it('runs a process on a terminal: a terminal task without stderr, raw mode while it runs, the pty sized like the terminal and resized with it', async () => {
    const ios = new Map<string, ProcessIo>();
    fake.script.createTask = ((id: string, _rootfs: unknown, io: ProcessIo) => {
      ios.set(id, io);
      fake.tasks.set(id, 'CREATED');
    });
    const sizes: string[] = [];
    fake.script.resizePty = ((id: string, size: { columns: number; rows: number }) => void sizes.push(`${id} ${size.columns}x${size.rows}`));
    let exit: ((code: number) => void) | undefined;
    fake.script.wait = (() => new Promise<number>((resolve) => (exit = resolve)));
    const modes: boolean[] = [];
    const input = Object.assign(new PassThrough(), { fd: 0, isTTY: true, setRawMode: (raw: boolean) => void modes.push(raw) });
    const output = Object.assign(new PassThrough(), { fd: 1, isTTY: true, columns: 120, rows: 40 });
    const running = executor.run({
      id: 'c-tty',
      root: { mounts: [{ type: 'bind', source: tmp, readonly: false }], readonly: false },
      mounts: [],
      process: { meta: META, stdout: sink().stream, stderr: sink().stream, terminal: { input: input as never, output: output as never } },
    });
    while (exit === undefined || sizes.length === 0) await new Promise((resolve) => setImmediate(resolve));
    Object.assign(output, { columns: 80, rows: 20 });
    output.emit('resize');
    exit(0);
    assert.deepEqual(await running, { exitCode: 0 });
    // The anchor's wait, when the executor closes, is the fake's own again.
    delete fake.script.wait;
    const io = ios.get('c-tty');
    assert.equal(io?.terminal, true);
    assert.equal(io?.stderr, '', 'the pseudo-terminal carries both outputs');
    assert.notEqual(io?.stdin, '', 'what is typed goes through stdin');
    assert.deepEqual(sizes, ['c-tty 120x40', 'c-tty 80x20']);
    assert.deepEqual(modes, [true, false], 'raw while the process runs, cooked after');
    output.emit('resize');
    assert.equal(sizes.length, 2, 'no resize once the process is gone');
    await executor.close?.();
  });

  it('groups by annotation: the spec of a run names the group the anchor is in', async () => {
    await run('c-group');
    const groups = new Set([...fake.containers.values()].map((a) => a[SHIM_GROUP_ANNOTATION]));
    assert.equal(groups.size, 1);
    assert.match([...groups][0] ?? '', /^kiln-/);
    await executor.close?.();
  });

  it('containerd lost before the process started: runs once more under another id, and removes the first later', async () => {
    let failOnce = true;
    fake.script.createTask = ((id: string) => {
      if (id === 'c-lost' && failOnce) {
        failOnce = false;
        throw lost();
      }
      fake.tasks.set(id, 'CREATED');
    });
    assert.deepEqual(await run('c-lost'), { exitCode: 0 });
    assert.ok(fake.calls.includes('createContainer c-lost-again'));
    assert.ok(fake.calls.includes('version '), 'waited for containerd to be back');
    assert.ok(warnings.includes('containerd went away before the container started; running it again'));
    // The first container was remembered, then removed before the retry ran.
    const first = fake.calls.indexOf('deleteContainer c-lost');
    assert.ok(first >= 0 && first < fake.calls.indexOf('createContainer c-lost-again'));
    await executor.close?.();
    assert.deepEqual([...fake.containers.keys()], []);
  });

  it('lost twice before starting: an unreachable error that says to run the build again', async () => {
    fake.script.createTask = (() => {
      throw lost();
    });
    await assert.rejects(run('c-twice'), (err: ContainerdError) => {
      assert.equal(err.failure, 'unreachable');
      assert.match(err.message, /^containerd went away before container "c-twice" started \(the connection to \/fake\/containerd.sock was lost: gone\); run the build again$/);
      return true;
    });
    // Both containers are remembered; the next run removes them first.
    fake.script = {};
    await run('c-after');
    assert.ok(!fake.containers.has('c-twice') && !fake.containers.has('c-twice-again'));
    await executor.close?.();
  });

  it('containerd restarting while the process runs is an error, never a retry', async () => {
    fake.script.wait = (() => Promise.reject(lost()));
    await assert.rejects(run('c-restart'), { failure: 'unreachable', message: /^containerd restarted while running container "c-restart" .*; run the build again$/ });
    assert.ok(!fake.calls.includes('createContainer c-restart-again'));
    fake.script = {};
    await executor.close?.();
  });

  it('a refused task is an EXECUTOR error with containerd\'s words, and its container is removed', async () => {
    fake.script.createTask = (() => {
      throw new ContainerdError('other', 'containerd Create: no such runtime', 'no such runtime', undefined);
    });
    await assert.rejects(run('c-refused'), { code: 'E_EXECUTOR', message: /^cannot run container "c-refused": no such runtime/ });
    assert.ok(!fake.containers.has('c-refused'));
    fake.script = {};
    await executor.close?.();
    assert.deepEqual(await readdir(stateDir), []);
  });

  it('cancelled while running: SIGTERM through kill, rejects with the reason, and cleans up', async () => {
    fake.script.wait = ((id: string) => new Promise<number>((resolve) => (fake.script.kill = (() => {
      fake.tasks.set(id, 'STOPPED');
      resolve(143);
    }) as never)));
    const abort = new AbortController();
    const reason = new Error('cancelled');
    const running = run('c-cancel', abort.signal);
    while (!fake.calls.includes('start c-cancel')) await new Promise((r) => setImmediate(r));
    abort.abort(reason);
    await assert.rejects(running, (err: unknown) => err === reason);
    assert.ok(fake.calls.includes('kill c-cancel'));
    fake.script = {};
    await executor.close?.();
    assert.deepEqual([...fake.containers.keys()], []);
  });
});

describe('the runc of containerd tasks', () => {
  let tmp: string;
  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'kiln-ctd-runc-'));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  const over = (fake: FakeContainerd, stateDir: string, runc?: TaskRunc): Executor & { recover(): Promise<void> } =>
    containerdExecutorOver(fake, {
      stateDir,
      capabilities: [],
      seccomp: { filter: undefined, status: { enabled: false, reason: 'test' } },
      killGraceMs: 100,
      logger: undefined,
      ...(runc === undefined ? {} : { runc }),
    });
  const runOn = (executor: Executor, id: string) =>
    executor.run({ id, root: { mounts: [{ type: 'bind', source: tmp, readonly: false }], readonly: false }, mounts: [], process: { meta: META, stdout: sink().stream, stderr: sink().stream } });

  it('the anchor and every run are created with the executor\'s runc, which close() lets go of after the last task', async () => {
    const fake = new FakeContainerd();
    const events: string[] = [];
    const runc: TaskRunc = {
      binary: async () => '/state/owner-runc',
      adoptDead: async () => void events.push('adoptDead'),
      close: async () => void events.push(`close after ${fake.tasks.size} tasks`),
    };
    const executor = over(fake, await mkdtemp(path.join(tmp, 'state-')), runc);
    await runOn(executor, 'c-sealed');
    assert.deepEqual([...fake.taskOptions.values()], [{ runcBinary: '/state/owner-runc' }, { runcBinary: '/state/owner-runc' }], 'the anchor\'s and the run\'s');
    await executor.close?.();
    assert.deepEqual(events, ['close after 0 tasks']);
  });

  it('without a runc of its own (none could be sealed), tasks run the shim\'s', async () => {
    const fake = new FakeContainerd();
    const executor = over(fake, await mkdtemp(path.join(tmp, 'state-')), { binary: async () => undefined, adoptDead: async () => {}, close: async () => {} });
    await runOn(executor, 'c-plain');
    assert.deepEqual([...fake.taskOptions.values()], [{}, {}]);
    await executor.close?.();
  });

  it('recovery points the runc link of a dead kiln process at a runc that exists, before it removes its containers', async () => {
    const fake = new FakeContainerd();
    const stateDir = await mkdtemp(path.join(tmp, 'state-'));
    // pid 1's start time is never 1: a dead owner's names.
    const dead = '1-1';
    const link = path.join(stateDir, `${dead}-runc-0a1b`);
    await symlink('/proc/1/fd/999', link);
    fake.containers.set('c-left', {});
    fake.listContainers = async () => [{ id: 'c-left', labels: { 'dev.kiln.owner': dead } }];
    const runcFile = path.join(tmp, 'runc');
    await writeFile(runcFile, '', { mode: 0o755 });
    let linkAtDelete: string | undefined;
    fake.script.deleteContainer = (async (id: string) => {
      linkAtDelete = await readlink(link);
      fake.containers.delete(id);
    });
    const executor = over(fake, stateDir, new ShimRunc({ stateDir, runc: runcFile, seal: false, logger: undefined }));
    await executor.recover();
    assert.equal(linkAtDelete, runcFile);
    assert.deepEqual(await readdir(stateDir), [], 'the link went with the dead owner\'s directories');
  });

  it('the shim\'s options name the runc binary in protobuf\'s wire format', () => {
    assert.deepEqual([...runcOptions('/r')], [0x32, 2, 0x2f, 0x72]);
    // A length of 200 takes two bytes of varint: 0xc8 0x01.
    assert.deepEqual([...runcOptions('x'.repeat(200)).subarray(0, 3)], [0x32, 0xc8, 0x01]);
  });
});
