/**
 * A pool of process directories: one per process (its hosts file and the
 * FIFOs of its streams), made in batches ahead of need. Making FIFOs takes
 * a process, and spawning one costs the event loop ~3 ms, paid once per
 * batch instead of once per run.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { currentOwner } from '../../owner.js';
import { runtimeError } from '../process-facts.js';
import { makeFifos } from './fifo-io.js';

/** How many process directories are made at once. */
const BATCH = 8;

/** Makes our directory `name` under `stateDir`; it must not exist (ids are unique among running containers). */
export async function makeStateDir(stateDir: string, name: string): Promise<string> {
  const dir = path.join(stateDir, name);
  try {
    await mkdir(dir);
  } catch (err) {
    throw runtimeError(`cannot make ${dir} for a container`, (err as Error).message, { hostPaths: [dir], cause: err });
  }
  return dir;
}

/** Process directories (`OWNER-RANDOM`, with FIFOs) under one state directory. */
export class ProcessDirs {
  readonly #stateDir: string;
  readonly #spare: string[] = [];
  /** The batch being made, if any. */
  #refill: Promise<void> | undefined;

  constructor(stateDir: string) {
    this.#stateDir = stateDir;
  }

  /** Starts a batch if none is spare (the first run makes one while the shim group starts). */
  prefill(): void {
    if (this.#spare.length === 0) this.#refillDirs().catch(() => {});
  }

  /**
   * A fresh directory, taken from those made ahead; the next batch is
   * started while half of this one is left, so runs rarely wait for one.
   * The caller removes it.
   */
  async take(): Promise<string> {
    for (;;) {
      const dir = this.#spare.pop();
      if (dir !== undefined) {
        // A failure is reported to the run that finds no directory left.
        if (this.#spare.length < BATCH / 2) this.#refillDirs().catch(() => {});
        return dir;
      }
      await this.#refillDirs();
    }
  }

  /** Removes the spare directories, once a batch being made is done. */
  async close(): Promise<void> {
    await this.#refill?.catch(() => {});
    await Promise.all(this.#spare.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
  }

  /** Makes a batch, unless one is being made; resolves when it is spare. */
  #refillDirs(): Promise<void> {
    this.#refill ??= this.#makeBatch()
      .then((dirs) => void this.#spare.push(...dirs))
      .finally(() => (this.#refill = undefined));
    return this.#refill;
  }

  async #makeBatch(): Promise<string[]> {
    const dirs: string[] = [];
    try {
      for (let i = 0; i < BATCH; i++) dirs.push(await makeStateDir(this.#stateDir, `${currentOwner()}-${randomBytes(6).toString('hex')}`));
      await makeFifos(dirs);
    } catch (err) {
      await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
      throw err;
    }
    return dirs;
  }
}
