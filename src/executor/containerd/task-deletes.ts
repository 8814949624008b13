/**
 * Knowing when a run's task is deleted. The shim announces a task deleted
 * on containerd's events stream (runc's container gone, the rootfs
 * unmounted, the streams closed) about half-way through containerd's
 * Delete call; containerd then runs the shim's cleanup command for the task,
 * as it does whenever a shim connection closes, and answers after it: ~15 ms
 * per run, on nothing of ours. A run on a terminal goes on at the
 * announcement (the shim closes the terminal's output on delete); other
 * runs do not wait for either. The container's removal waits for the answer. The stream is open while runs
 * go on, and closed soon after the last one: an open stream keeps node's
 * event loop alive, so a program that never closed its executor would
 * never exit.
 */
import type { ContainerdApi } from './client.js';

/** How long the stream stays open with no run going on (the next step of a build starts within milliseconds). */
const IDLE_MS = 200;

/** The task-delete announcements of one executor's runs. */
export class TaskDeletes {
  readonly #client: ContainerdApi;
  /** Stops the stream; undefined while there is none (the next attempt opens one). */
  #unwatch: (() => void) | undefined;
  /** Runs waiting for the announcement of their task's delete: container id -> go on. */
  readonly #awaiting = new Map<string, () => void>();
  /** containerd's deletes that runs went on without: container id -> whether the call succeeded. */
  readonly #deleting = new Map<string, Promise<boolean>>();
  /** How many runs are going on. */
  #running = 0;
  #idleTimer: NodeJS.Timeout | undefined;

  constructor(client: ContainerdApi) {
    this.#client = client;
  }

  /** A run begins; `runEnded` must follow. */
  runStarted(): void {
    this.#running++;
    clearTimeout(this.#idleTimer);
  }

  /** A run is over; the stream closes soon after the last. */
  runEnded(): void {
    if (--this.#running > 0) return;
    clearTimeout(this.#idleTimer);
    this.#idleTimer = setTimeout(() => this.close(), IDLE_MS).unref();
  }

  /** Opens the stream, unless one is open; one that ended (containerd went away) is opened again. */
  watch(): void {
    clearTimeout(this.#idleTimer);
    if (this.#unwatch !== undefined) return;
    const unwatch = this.#client.watchTaskDeletes(
      (containerId) => this.#awaiting.get(containerId)?.(),
      () => {
        if (this.#unwatch === unwatch) this.#unwatch = undefined;
      },
    );
    this.#unwatch = unwatch;
  }

  /**
   * Deletes container `id`'s exited task; resolves at the shim's
   * announcement, or with containerd's call when there is no stream (or the
   * call fails first).
   */
  async delete(id: string): Promise<void> {
    const announced = new Promise<void>((resolve) => {
      if (this.#unwatch !== undefined) this.#awaiting.set(id, resolve);
    });
    const deleted = this.#client.delete({ containerId: id });
    this.#deleting.set(id, deleted.then(() => true, () => false));
    try {
      await Promise.race([deleted, announced]);
    } finally {
      this.#awaiting.delete(id);
    }
  }

  /** Whether containerd's delete of `id`'s task succeeded, once it answers (undefined: none was made); forgets it. */
  take(id: string): Promise<boolean> | undefined {
    const deleting = this.#deleting.get(id);
    this.#deleting.delete(id);
    return deleting;
  }

  /** Closes the stream now. */
  close(): void {
    clearTimeout(this.#idleTimer);
    this.#unwatch?.();
    this.#unwatch = undefined;
  }
}
