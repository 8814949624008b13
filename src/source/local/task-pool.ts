/**
 * Bounded-concurrency work fed by a directory walk: tasks start as they are
 * added, a few at a time, while the walk goes on. The first failure is kept;
 * tasks not yet started then fail at once instead of doing useless I/O, and
 * the walk can stop early by checking {@link TaskPool.throwIfFailed}.
 */
import pLimit, { type LimitFunction } from 'p-limit';

/** A queue of async tasks run at most `concurrency` at a time. */
export class TaskPool<T> {
  readonly #limit: LimitFunction;
  readonly #tasks: Promise<T>[] = [];
  #failure: { readonly error: unknown } | undefined;

  constructor(concurrency: number) {
    this.#limit = pLimit(concurrency);
  }

  /** Queues `task` and returns its outcome. */
  add(task: () => Promise<T>): Promise<T> {
    const run = this.#limit(async () => {
      this.throwIfFailed();
      return task();
    });
    // Observed at once: a task may fail long before anyone awaits it, which
    // would otherwise be an unhandled rejection and crash the process.
    run.catch((error: unknown) => {
      this.#failure ??= { error };
    });
    this.#tasks.push(run);
    return run;
  }

  /** Throws the first failure of any task. */
  throwIfFailed(): void {
    if (this.#failure !== undefined) throw this.#failure.error;
  }

  /** Every task's result in the order added, or the first failure once all have settled. */
  async drain(): Promise<T[]> {
    const settled = await Promise.allSettled(this.#tasks);
    this.throwIfFailed();
    return settled.map((outcome) => (outcome as PromiseFulfilledResult<T>).value);
  }

  /** Stops the tasks not yet started and waits for the running ones, so none outlives the caller. */
  async abandon(error: unknown): Promise<void> {
    this.#failure ??= { error };
    await Promise.allSettled(this.#tasks);
  }
}
