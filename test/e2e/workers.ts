/**
 * The worker matrix of the end-to-end tests: each exec-related suite runs
 * once per worker, the containerd one against a private containerd started
 * for the suite.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { startContainerd, type TestContainerd } from '../support/containerd.js';
import { EXAMPLES, removeDir, tempDir } from './harness.js';

/** Every worker the exec tests run on. */
export const WORKERS = ['runc', 'containerd'] as const;
export type WorkerId = (typeof WORKERS)[number];

/** The busybox rootfs ops of llb-examples/busybox.json (result `base`), to build on. */
export async function busyboxOps(): Promise<Record<string, unknown>> {
  return (JSON.parse(await readFile(join(EXAMPLES, 'busybox.json'), 'utf8')) as { ops: Record<string, unknown> }).ops;
}

/**
 * An exec op on the busybox rootfs (op `base`, read-only) running `script`
 * with `/bin/sh -c`, with /out as its result, then `mounts`, and `extra`
 * fields of the exec (secretEnv, ...).
 */
export function shStep(script: string, mounts: readonly unknown[] = [], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    inputs: ['base'],
    exec: {
      meta: { args: ['/bin/sh', '-c', script] },
      mounts: [{ dest: '/', input: 0, output: -1, readonly: true }, { dest: '/out', input: -1, output: 0 }, ...mounts],
      ...extra,
    },
  };
}

/** What one suite on one worker has: set by the suite's `before` hook. */
export interface WorkerSuite {
  /** A temp dir for the suite, removed afterwards. */
  readonly work: string;
  /** kiln's root for the suite (inside `work`). */
  readonly root: string;
  /** The private containerd, for the containerd worker only. */
  readonly containerd: TestContainerd | undefined;
  /** The flags that put `kiln COMMAND` on this worker (`--worker` only for build). */
  workerArgs(command: string | undefined): string[];
}

/**
 * Registers the suite's before/after hooks (call it inside `describe`) and
 * returns the suite's state, filled in once `before` has run.
 */
export function workerSuite(workerId: WorkerId, prefix: string): WorkerSuite {
  const state = { work: '', root: '', containerd: undefined as TestContainerd | undefined };
  before(async () => {
    state.work = await tempDir(`${prefix}-${workerId}`);
    state.root = join(state.work, 'root');
    if (workerId === 'containerd') state.containerd = await startContainerd();
  });
  after(async () => {
    await state.containerd?.close();
    await removeDir(state.work);
  });
  return {
    get work() {
      return state.work;
    },
    get root() {
      return state.root;
    },
    get containerd() {
      return state.containerd;
    },
    workerArgs: (command) =>
      state.containerd === undefined ? [] : [...(command === 'build' ? ['--worker', 'containerd'] : []), '--containerd-address', state.containerd.address],
  };
}
