/**
 * Many entries of a tree copied at once. A tree copy is thousands of small
 * files, each a create (a path lookup and a journal entry: the costly part)
 * and a few metadata calls; one at a time, the thread sits idle between
 * them. Here file contents are copied on libuv's thread pool, several at a
 * time, while the caller walks on; their metadata is set synchronously as
 * each copy completes (see {@link applyMetadata}).
 *
 * The caller adds entries parents first. A directory is created before
 * {@link TreeCopier.addDirectory} returns, so its children can go in at once;
 * directories' times are set in {@link TreeCopier.finish}, after everything
 * is in them (adding an entry changes a directory's mtime).
 */
import type { BigIntStats } from 'node:fs';
import { type CopyEntryOptions, copyEntry, copyTimes } from './metadata.js';

/** Options of {@link TreeCopier}. */
export interface TreeCopierOptions extends CopyEntryOptions {
  readonly signal?: AbortSignal | undefined;
  /** Copies in flight at once (default {@link DEFAULT_COPY_CONCURRENCY}). */
  readonly concurrency?: number;
  /** Wraps a failure of copying `src` to `dest` (default: the error as it is). */
  readonly onError?: (err: unknown, src: string, dest: string) => unknown;
}

/**
 * Creates in flight: enough to keep the thread pool's 4 threads busy while
 * the main thread sets the metadata of finished ones.
 */
export const DEFAULT_COPY_CONCURRENCY = 32;

/** Queued entries past which {@link TreeCopier.addFile}'s callers should wait ({@link TreeCopier.room}). */
const HIGH_WATER = 4096;

interface Task {
  readonly src: string;
  readonly dest: string;
  readonly stats: BigIntStats;
  /** The copy of the first name of a multiply-linked file, which this one links to. */
  readonly after: Promise<void> | undefined;
  readonly done: Deferred;
}

/** A promise with its resolve and reject at hand (Promise.withResolvers, which Node 20 lacks). */
interface Deferred {
  readonly promise: Promise<void>;
  readonly resolve: () => void;
  readonly reject: (reason: unknown) => void;
}

function deferred(): Deferred {
  let resolve!: () => void;
  let reject!: (reason: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Copies the entries of one tree; see the module comment. */
export class TreeCopier {
  readonly #options: TreeCopierOptions;
  readonly #entry: CopyEntryOptions;
  readonly #concurrency: number;
  readonly #queue: Task[] = [];
  #head = 0;
  #running = 0;
  #failure: { readonly error: unknown } | undefined;
  #idle: Deferred | undefined;
  #room: Deferred | undefined;
  /** Each multiply-linked source file's first copy, which later names wait for. */
  readonly #firstCopies = new Map<string, Promise<void>>();
  /** Directories written, with the times they take once filled. */
  readonly #dirs: [string, BigIntStats][] = [];

  constructor(options: TreeCopierOptions = {}) {
    this.#options = options;
    this.#entry = { hardlinks: options.hardlinks ?? new Map(), ...pickOverrides(options) };
    this.#concurrency = options.concurrency ?? DEFAULT_COPY_CONCURRENCY;
  }

  /** Creates the directory `dest` (or merges into it) as a copy of `src`, before returning. */
  async addDirectory(src: string, dest: string, stats: BigIntStats): Promise<void> {
    this.throwIfFailed();
    await this.#copy(src, dest, stats);
    this.#dirs.push([dest, stats]);
  }

  /** Gives the existing directory `dest` the times of `stats` once the copy is done, and nothing else of it. */
  keepDirectoryTimes(dest: string, stats: BigIntStats): void {
    this.#dirs.push([dest, stats]);
  }

  /** Queues the copy of a non-directory `src` to `dest`, which must not exist; its directory must. */
  addFile(src: string, dest: string, stats: BigIntStats): void {
    this.throwIfFailed();
    let after: Promise<void> | undefined;
    const done = deferred();
    // Observed at once: the failure is reported through the copier, not this promise.
    done.promise.catch(() => undefined);
    if (stats.isFile() && stats.nlink > 1n) {
      const inode = `${stats.dev}:${stats.ino}`;
      after = this.#firstCopies.get(inode);
      if (after === undefined) this.#firstCopies.set(inode, done.promise);
    }
    this.#queue.push({ src, dest, stats, after, done });
    this.#pump();
  }

  /**
   * Waits for the copies queued so far, then forgets which files were copied:
   * later names of a multiply-linked file become copies of their own, not
   * links to an earlier one (BuildKit keeps hard links within one source).
   */
  async forgetHardlinks(): Promise<void> {
    await this.settle();
    this.throwIfFailed();
    this.#firstCopies.clear();
    this.#entry.hardlinks?.clear();
  }

  /** Resolves when the queue is short enough to add more (a walk waits here so its entries do not pile up). */
  async room(): Promise<void> {
    this.throwIfFailed();
    if (this.#queue.length - this.#head < HIGH_WATER) return;
    this.#room ??= deferred();
    await this.#room.promise;
    this.throwIfFailed();
  }

  /** Throws the first failure of a queued copy. */
  throwIfFailed(): void {
    if (this.#failure !== undefined) throw this.#failure.error;
    this.#options.signal?.throwIfAborted();
  }

  /** Waits for every queued copy, then sets the directories' times; throws the first failure. */
  async finish(): Promise<void> {
    await this.settle();
    this.throwIfFailed();
    for (const [dest, stats] of this.#dirs) await copyTimes(dest, stats, this.#options.timestamp);
  }

  /** Waits for the copies in flight and drops those not started (after a failure elsewhere), so none outlives the caller. */
  async settle(): Promise<void> {
    if (this.#running === 0 && this.#queue.length === this.#head) return;
    this.#idle ??= deferred();
    await this.#idle.promise;
  }

  /** Abandons the copies not started yet: `error` becomes the copier's failure. */
  async abandon(error: unknown): Promise<void> {
    this.#failure ??= { error };
    this.#dropQueue();
    await this.settle();
  }

  async #copy(src: string, dest: string, stats: BigIntStats): Promise<void> {
    try {
      await copyEntry(src, dest, stats, this.#entry);
    } catch (err) {
      throw this.#options.onError === undefined ? err : this.#options.onError(err, src, dest);
    }
  }

  #pump(): void {
    while (this.#running < this.#concurrency && this.#head < this.#queue.length) {
      const task = this.#queue[this.#head]!;
      this.#queue[this.#head++] = undefined as unknown as Task;
      this.#running++;
      void this.#run(task);
    }
    if (this.#head === this.#queue.length && this.#head > 0) {
      this.#queue.length = 0;
      this.#head = 0;
    }
    if (this.#room !== undefined && this.#queue.length - this.#head < HIGH_WATER / 2) {
      this.#room.resolve();
      this.#room = undefined;
    }
    if (this.#running === 0 && this.#idle !== undefined) {
      this.#idle.resolve();
      this.#idle = undefined;
    }
  }

  async #run(task: Task): Promise<void> {
    try {
      if (task.after !== undefined) await task.after;
      this.throwIfFailed();
      await this.#copy(task.src, task.dest, task.stats);
      task.done.resolve();
    } catch (error) {
      this.#failure ??= { error };
      task.done.reject(error);
      this.#dropQueue();
    } finally {
      this.#running--;
      this.#pump();
    }
  }

  #dropQueue(): void {
    for (let i = this.#head; i < this.#queue.length; i++) this.#queue[i]!.done.reject(this.#failure?.error);
    this.#queue.length = 0;
    this.#head = 0;
  }
}

function pickOverrides(options: CopyEntryOptions): CopyEntryOptions {
  return {
    ...(options.owner === undefined ? {} : { owner: options.owner }),
    ...(options.mode === undefined ? {} : { mode: options.mode }),
    ...(options.timestamp === undefined ? {} : { timestamp: options.timestamp }),
  };
}
