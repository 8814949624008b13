/**
 * Removing containers: one of ours that is done, what a dead kiln process
 * left, and those a lost containerd kept us from removing (remembered, and
 * removed before the next run, once it is back).
 */
import { readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from '../../log.js';
import { isOwnerAlive } from '../../owner.js';
import type { ContainerdApi } from './client.js';
import { ignore } from './failures.js';

const SIGNALS = os.constants.signals;

/** Kills and deletes container `id`'s task, if any, then deletes the container; what is gone already is no error. */
export async function destroyContainer(client: ContainerdApi, id: string): Promise<void> {
  const ref = { containerId: id };
  const task = await client.getTask(id).catch((err: unknown) => ignore(err, 'not-found'));
  if (task !== undefined) {
    // A created task (the anchor's) is killed first too: deleting one whose
    // runc init still waits makes runc poll for its end, ~120 ms against
    // ~45 ms for kill, wait and delete.
    if (task.status !== 'STOPPED') {
      await client.kill(ref, SIGNALS.SIGKILL, true).catch((err: unknown) => ignore(err, 'not-found', 'failed-precondition'));
      await client.wait(ref);
    }
    await client.delete(ref).catch((err: unknown) => ignore(err, 'not-found'));
  }
  await client.deleteContainer(id).catch((err: unknown) => ignore(err, 'not-found'));
}

/**
 * Containers of ours that could not be removed because containerd went
 * away, with our directory of each; removed before the next run.
 */
export class Leftovers {
  readonly #client: ContainerdApi;
  readonly #logger: Logger | undefined;
  readonly #pending = new Map<string, string>();

  constructor(client: ContainerdApi, logger: Logger | undefined) {
    this.#client = client;
    this.#logger = logger;
  }

  /** Remembers container `id` (and our `dir`) for later removal. */
  add(id: string, dir: string): void {
    this.#logger?.warn({ id }, 'containerd is gone; the container will be removed before the next run');
    this.#pending.set(id, dir);
  }

  /** Removes what is remembered; what containerd still cannot remove waits for the next call. */
  async remove(): Promise<void> {
    for (const [id, dir] of this.#pending) {
      try {
        await destroyContainer(this.#client, id);
        await rm(dir, { recursive: true, force: true });
        this.#pending.delete(id);
      } catch (err) {
        this.#logger?.warn({ id, err }, 'cannot remove a container left when containerd went away');
      }
    }
  }
}

/**
 * Removes the directories in `stateDir` named after dead kiln processes;
 * with `thenEmpty`, `stateDir` too once nothing is left in it. A missing
 * `stateDir` is fine.
 */
export async function removeDeadDirs(stateDir: string, { thenEmpty = false } = {}): Promise<void> {
  const names = await readdir(stateDir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (names === undefined) return;
  for (const name of names) {
    if (!isOwnerAlive(name)) await rm(path.join(stateDir, name), { recursive: true, force: true });
  }
  if (thenEmpty && (await readdir(stateDir)).length === 0) await rm(stateDir, { recursive: true, force: true });
}
