/**
 * The exec adapter over fakes: a cache manager whose refs log what happens
 * to them, and an executor that runs nothing. No root needed: no mount is
 * made (a fake mutable's "mount" is a plain temp directory, as the native
 * snapshotter's is).
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { CacheManager, ImmutableRef, MutableRef, ResultRef } from '../../../src/cache/types.js';
import type { Digest } from '../../../src/digest.js';
import type { Executor, RunOptions } from '../../../src/executor/types.js';
import type { Logger } from '../../../src/log.js';
import type { ExecMount, Op } from '../../../src/llb/types.js';
import { prepareMounts, type PrepareMountsOptions } from '../../../src/ops/exec/mounts.js';
import { ReleaseStack } from '../../../src/ops/exec/release-stack.js';
import { runExec } from '../../../src/ops/exec/run.js';
import type { OpContext } from '../../../src/ops/types.js';
import { NULL_PROGRESS } from '../../../src/progress/types.js';
import type { SnapshotKey } from '../../../src/snapshot/types.js';
import { createNetworkProvider } from '../../../src/network/provider.js';
import type { Worker } from '../../../src/worker/types.js';

let tmp: string;
before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'kiln-prepare-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** What happened to the fake refs, in order. */
type Log = string[];

interface FakeOptions {
  /** Called as mutable `name` is made (e.g. to abort, or throw). */
  readonly onNew?: (name: string) => void;
  /** Names of mutables whose commit fails. */
  readonly failCommit?: readonly string[];
}

/** A cache manager whose mutables are temp directories named m1, m2, ...; only what exec ops use. */
function fakeCache(log: Log, options: FakeOptions = {}): CacheManager {
  let made = 0;
  const newMutable = async (): Promise<MutableRef> => {
    const name = `m${++made}`;
    options.onNew?.(name);
    const dir = path.join(tmp, `${name}-${Math.random().toString(36).slice(2)}`);
    await mkdir(dir);
    log.push(`new ${name}`);
    let state: 'open' | 'committed' | 'released' = 'open';
    const release = async (): Promise<void> => {
      if (state !== 'open') return;
      state = 'released';
      log.push(`release ${name}`);
    };
    return {
      id: name as SnapshotKey,
      mount: async () => {
        log.push(`mount ${name}`);
        const unmount = async (): Promise<void> => void log.push(`unmount ${name}`);
        return { path: dir, release: unmount, [Symbol.asyncDispose]: unmount };
      },
      mounts: async () => [{ type: 'bind', source: dir, readonly: false }],
      commit: async () => {
        if (options.failCommit?.includes(name)) throw new Error(`cannot commit ${name}`);
        state = 'committed';
        log.push(`commit ${name}`);
        return immutable(log, `${name}-done`);
      },
      release,
      [Symbol.asyncDispose]: release,
    };
  };
  return { newMutable } as unknown as CacheManager;
}

/** An immutable ref whose mount is `dir` (or fails when `dir` is an Error). */
function immutable(log: Log, name: string, dir: string | Error = tmp): ImmutableRef {
  let released = false;
  const release = async (): Promise<void> => {
    if (released) return;
    released = true;
    log.push(`release ${name}`);
  };
  return {
    id: name as SnapshotKey,
    clone: () => assert.fail('not used'),
    mount: async () => {
      if (dir instanceof Error) throw dir;
      log.push(`mount ${name}`);
      const unmount = async (): Promise<void> => void log.push(`unmount ${name}`);
      return { path: dir, release: unmount, [Symbol.asyncDispose]: unmount };
    },
    mounts: async () => assert.fail('not used'),
    layers: async () => assert.fail('not used'),
    release,
    [Symbol.asyncDispose]: release,
  };
}

const bind = (dest: string, input: number, more: Partial<{ output: number; readonly: boolean; selector: string }> = {}): ExecMount => ({
  type: 'bind',
  dest,
  input,
  selector: '',
  output: -1,
  readonly: false,
  ...more,
});

function options(log: Log, mounts: readonly ExecMount[], inputs: readonly ResultRef[], more: Partial<PrepareMountsOptions> & FakeOptions = {}): PrepareMountsOptions {
  return {
    opName: 'op',
    mounts,
    inputs,
    cache: fakeCache(log, more),
    description: 'test',
    secrets: new Map(),
    signal: new AbortController().signal,
    sshMounts: [],
    support: { ownMountpoints: ['/proc'] },
    ...more,
  };
}

describe('ReleaseStack', () => {
  it('releases last first, runs every release once even when one fails, and throws the first failure', async () => {
    const log: string[] = [];
    const stack = new ReleaseStack();
    stack.defer(async () => void log.push('a'));
    stack.defer(async () => {
      log.push('b');
      throw new Error('b failed');
    });
    stack.use({ release: async () => void log.push('c') });
    await assert.rejects(stack.release(), { message: 'b failed' });
    await stack.release().catch(() => undefined);
    assert.deepEqual(log, ['c', 'b', 'a']);
    assert.throws(() => stack.defer(async () => {}), /after release/);
  });
});

describe('prepareMounts', () => {
  it('hands the root to the runtime unmounted, and releases mounts before the snapshots under them', async () => {
    const log: Log = [];
    const input = immutable(log, 'in');
    const prepared = await prepareMounts(
      options(log, [bind('/', 0, { output: 0 }), bind('/work', -1, { output: 1 }), bind('/src', 0, { readonly: true }), { type: 'tmpfs', dest: '/tmp', readonly: false, tmpfs: { size: 0 } }], [input]),
    );
    assert.equal(prepared.root.mounts[0]?.type, 'bind');
    assert.deepEqual(
      prepared.mounts.map((m) => [m.destination, m.type]),
      [
        ['/work', 'bind'],
        ['/src', 'bind'],
        ['/tmp', 'tmpfs'],
      ],
    );
    assert.deepEqual(prepared.outputs.map((o) => o.id), ['m1', 'm2']);
    await prepared.unmount();
    assert.deepEqual(log, ['new m1', 'new m2', 'mount m2', 'mount in', 'unmount in', 'unmount m2']);
    await prepared.release();
    await prepared.release();
    assert.deepEqual(log.slice(6), ['release m2', 'release m1']);
  });

  it('failing half-way releases everything prepared, in reverse order', async () => {
    const log: Log = [];
    const broken = immutable(log, 'broken', new Error('cannot mount the input'));
    const mounts = [bind('/', -1), bind('/a', -1), bind('/b', -1), bind('/c', 0, { readonly: true })];
    await assert.rejects(prepareMounts(options(log, mounts, [broken])), { message: 'cannot mount the input' });
    assert.deepEqual(log, ['new m1', 'new m2', 'new m3', 'mount m2', 'mount m3', 'unmount m3', 'unmount m2', 'release m3', 'release m2', 'release m1']);
  });

  it('a selector that is not there fails with the mount\'s field, and leaves nothing', async () => {
    const log: Log = [];
    const mounts = [bind('/', -1), bind('/a', -1, { selector: '/missing' })];
    await assert.rejects(prepareMounts(options(log, mounts, [])), { code: 'E_PATH_NOT_FOUND', field: 'ops.op.exec.mounts[1].selector' });
    assert.deepEqual(log, ['new m1', 'new m2', 'mount m2', 'unmount m2', 'release m2', 'release m1']);
  });

  it('cancelled during preparation: rejects with the reason, everything released', async () => {
    const log: Log = [];
    const abort = new AbortController();
    const reason = new Error('build cancelled');
    const mounts = [bind('/', -1), bind('/a', -1), bind('/b', -1)];
    const onNew = (name: string): void => {
      if (name === 'm2') abort.abort(reason);
    };
    await assert.rejects(prepareMounts(options(log, mounts, [], { signal: abort.signal, onNew })), (err: unknown) => err === reason);
    assert.deepEqual(log, ['new m1', 'new m2', 'release m2', 'release m1']);
  });
});

describe('runExec', () => {
  const op = (mounts: readonly ExecMount[]): Op & { body: { kind: 'exec' } } => ({
    name: 'op',
    inputs: [],
    body: {
      kind: 'exec',
      exec: {
        meta: { args: ['true'], env: [], cwd: '/', user: '', hostname: '', extraHosts: [], ulimit: [], cgroupParent: '', validExitCodes: [0] },
        mounts,
        network: 'sandbox',
        security: 'sandbox',
        secretEnv: [],
      },
    },
    platform: { os: 'linux', architecture: 'amd64', variant: '' },
    constraints: [],
    metadata: { description: {}, ignoreCache: false },
    digest: 'sha256:0' as Digest,
    outputCount: mounts.filter((m) => m.type === 'bind' && m.output >= 0).length,
  });

  function context(log: Log, fake: FakeOptions): { ctx: OpContext; executor: Executor; runs: RunOptions[] } {
    const runs: RunOptions[] = [];
    const executor: Executor = {
      name: 'fake',
      mountSupport: { ownMountpoints: ['/proc'] },
      run: async (o) => {
        runs.push(o);
        log.push('run');
        return { exitCode: 0 };
      },
      exec: async () => assert.fail('not used'),
    };
    const quiet = (): void => {};
    const logger = { debug: quiet, info: quiet, warn: quiet, error: quiet, trace: quiet } as unknown as Logger;
    const network = createNetworkProvider({ choice: 'none', root: '/nonexistent' });
    const worker = { id: 'fake', labels: {}, platforms: [], snapshotter: 'native', executor, cache: fakeCache(log, fake), network } as Worker;
    return { ctx: { worker, logger }, executor, runs };
  }

  it('runs with one options object: the root structured, read-only as a flag', async () => {
    const log: Log = [];
    const { ctx, executor, runs } = context(log, {});
    const outputs = await runExec({
      op: op([bind('/', -1, { output: 0, readonly: true })]),
      executor,
      inputs: [],
      ctx,
      run: { signal: new AbortController().signal, progress: NULL_PROGRESS, cacheKey: 'k' as never },
    });
    assert.deepEqual(outputs.map((o) => o?.id), ['m1-done']);
    const [ran] = runs;
    assert.equal(ran?.root.readonly, true);
    assert.equal(ran?.root.mounts[0]?.type, 'bind');
    assert.match(ran?.id ?? '', /^kiln-[0-9a-f]{12}$/);
    await outputs[0]?.release();
  });

  it('a second output failing to commit: the first output is released, nothing leaks', async () => {
    const log: Log = [];
    const { ctx, executor } = context(log, { failCommit: ['m2'] });
    await assert.rejects(
      runExec({
        op: op([bind('/', -1, { output: 0 }), bind('/out', -1, { output: 1 })]),
        executor,
        inputs: [],
        ctx,
        run: { signal: new AbortController().signal, progress: NULL_PROGRESS, cacheKey: 'k' as never },
      }),
      { message: 'cannot commit m2' },
    );
    assert.deepEqual(log, ['new m1', 'new m2', 'mount m2', 'run', 'unmount m2', 'commit m1', 'release m1-done', 'release m2']);
  });
});
