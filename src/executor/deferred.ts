/**
 * An executor whose setup waits for its first container. The worker that
 * holds it is available (and selected) as soon as the cheap check of what
 * it needs is done; the rest (for runc: its state directory on a tmpfs,
 * cleaning what dead processes left there, the seccomp profile) is done by
 * the first run, exec or ready(), once, and all of them wait for it. A
 * build whose steps all come from the cache starts no container, and that
 * setup cost it ~3 ms of a ~50 ms process.
 */
import type { ExecOptions, Executor, ExitStatus, MountSupport, ProcessSpec, RunOptions, SeccompStatus } from './types.js';

/** Options of {@link DeferredExecutor}. */
export interface DeferredExecutorOptions {
  /** The executor's name, known before it is made. */
  readonly name: string;
  /** What it mounts by itself and what it can mount, known before it is made. */
  readonly mountSupport: MountSupport;
  /** Makes the executor; called once, by the first run, exec or ready(). */
  readonly create: () => Promise<Executor>;
}

export class DeferredExecutor implements Executor {
  readonly name: string;
  readonly mountSupport: MountSupport;
  readonly #create: () => Promise<Executor>;
  #made: Promise<Executor> | undefined;
  /** Set once the executor is made. */
  #executor: Executor | undefined;

  constructor(options: DeferredExecutorOptions) {
    this.name = options.name;
    this.mountSupport = options.mountSupport;
    this.#create = options.create;
  }

  /** The made executor's; undefined until it is made (see ready). */
  get seccomp(): SeccompStatus | undefined {
    return this.#executor?.seccomp;
  }

  /** Does the setup now, if it was not done yet; rejects with the reason it failed. */
  async ready(): Promise<void> {
    await this.#make();
  }

  /** Starts the setup and then the made executor's own preparation (both in the background; a failure is the run's to report). */
  prewarm(): void {
    void this.#make().then(
      (executor) => executor.prewarm?.(),
      () => undefined,
    );
  }

  async run(options: RunOptions): Promise<ExitStatus> {
    return (await this.#make()).run(options);
  }

  async exec(id: string, process: ProcessSpec, options?: ExecOptions): Promise<ExitStatus> {
    return (await this.#make()).exec(id, process, options);
  }

  /** Closes the executor if it was made (waiting for a setup under way); nothing otherwise. */
  async close(): Promise<void> {
    if (this.#made === undefined) return;
    const executor = await this.#made.catch(() => undefined);
    await executor?.close?.();
  }

  #make(): Promise<Executor> {
    this.#made ??= this.#create().then((executor) => {
      this.#executor = executor;
      return executor;
    });
    return this.#made;
  }
}
