/**
 * The runc the shim runs for kiln's tasks: the sealed in-memory copy kiln
 * makes for the runc executor (../sealed-runc.ts), so that runc skips
 * cloning or bind-mounting its own binary in every container it starts
 * (`runc create` for a task, `runc exec` for an exec'd process). The shim
 * takes the binary per task, from the runc v2 shim's options
 * (`BinaryName`), and runs it for every runc call of that task, as long
 * as the task lives.
 *
 * The shim is given a symbolic link in our state directory,
 * `OWNER-runc-RANDOM` (one per executor: executors of one process may share
 * the directory, and each lets go of its copy when it closes), to the copy (`/proc/PID/fd/N`), not that path itself: if kiln dies, the
 * copy goes with it, and the next kiln process points the dead owner's
 * link at a runc that exists before it kills and deletes the tasks that
 * were left (then removes the link with the dead owner's directories).
 * The shim follows the link at each call.
 *
 * Without a sealed copy (see sealRunc), tasks run the shim's own `runc`.
 */
import { randomBytes } from 'node:crypto';
import { readlink, rename, rm, symlink } from 'node:fs/promises';
import path from 'node:path';
import { findInPath } from '../../command.js';
import type { Logger } from '../../log.js';
import { currentOwner } from '../../owner.js';
import { sealRunc, type SealedRunc } from '../sealed-runc.js';

/** A link's name: the owner, then `-runc-` and a random part. */
const LINK_RE = /^\d+-\d+-runc-[0-9a-f]+$/;

/** Whether `name`, in an executor's state directory, is the runc link of some executor. */
export function isRuncLink(name: string): boolean {
  return LINK_RE.test(name);
}

/** What the shim group's runc needs. */
export interface ShimRuncOptions {
  /** The executor's state directory (which exists). */
  readonly stateDir: string;
  /** The runc to seal; default the first `runc` in PATH (the one the shim would run). */
  readonly runc?: string;
  /** Whether to seal at all; false gives tasks the shim's own runc. Default true. */
  readonly seal?: boolean;
  readonly logger: Logger | undefined;
}

/** Which runc an executor's tasks run, as the executor uses it (a fake in unit tests). */
export interface TaskRunc {
  /** The path to give the shim as the task's runc (`TaskOptions.runcBinary`); undefined: the shim's own. */
  binary(): Promise<string | undefined>;
  /** Makes the runc of the tasks of dead owners (`names` in the state directory that `isAlive` says are dead) one that exists. */
  adoptDead(isAlive: (owner: string) => boolean, names: readonly string[]): Promise<void>;
  /** Lets go of it, once no task is left. */
  close(): Promise<void>;
}

/** The runc of one executor's tasks. */
export class ShimRunc implements TaskRunc {
  readonly #stateDir: string;
  readonly #logger: Logger | undefined;
  /** The sealed copy and the link to it; undefined when there is none. */
  readonly #ready: Promise<{ sealed: SealedRunc; link: string } | undefined>;
  /** The runc file that was sealed, for dead owners' links. */
  readonly #runc: Promise<string | undefined>;

  constructor(options: ShimRuncOptions) {
    this.#stateDir = options.stateDir;
    this.#logger = options.logger;
    this.#runc = options.runc === undefined ? findInPath('runc') : Promise.resolve(options.runc);
    this.#ready = options.seal === false ? Promise.resolve(undefined) : this.#prepare();
  }

  /** The path to give the shim as the task's runc (`TaskOptions.runcBinary`); undefined: the shim's own. */
  async binary(): Promise<string | undefined> {
    return (await this.#ready)?.link;
  }

  /**
   * Points the link of every dead owner in the state directory at a runc
   * that exists (this one's sealed copy, else the runc file), so that the
   * shim can kill and delete the tasks they left. Their links go with
   * their directories afterwards (removeDeadDirs).
   */
  async adoptDead(isAlive: (owner: string) => boolean, names: readonly string[]): Promise<void> {
    const target = (await this.#ready)?.sealed.path ?? (await this.#runc);
    if (target === undefined) return;
    for (const name of names) {
      if (!isRuncLink(name) || isAlive(name)) continue;
      const link = path.join(this.#stateDir, name);
      // Only a link of ours: a directory named so is a process's, and left alone.
      if (!(await readlink(link).then(() => true, () => false))) continue;
      await replaceLink(link, target).catch((err: unknown) => this.#logger?.warn({ link, err }, "cannot point a dead kiln process's runc link at runc"));
    }
  }

  /** Removes the link and lets go of the copy; no task may run a runc call after. */
  async close(): Promise<void> {
    const ready = await this.#ready;
    if (ready === undefined) return;
    await rm(ready.link, { force: true });
    ready.sealed.close();
  }

  async #prepare(): Promise<{ sealed: SealedRunc; link: string } | undefined> {
    const runc = await this.#runc;
    if (runc === undefined) return undefined;
    const sealed = await sealRunc(runc, this.#logger);
    if (sealed === undefined) return undefined;
    const link = path.join(this.#stateDir, `${currentOwner()}-runc-${randomBytes(4).toString('hex')}`);
    try {
      await replaceLink(link, sealed.path);
      return { sealed, link };
    } catch (err) {
      this.#logger?.debug({ err, link }, "the shim runs runc from its file: cannot link the sealed copy");
      sealed.close();
      return undefined;
    }
  }
}

/** Makes `link` a symbolic link to `target`, atomically replacing what is there. */
async function replaceLink(link: string, target: string): Promise<void> {
  const temp = `${link}.${process.pid}.tmp`;
  await rm(temp, { force: true });
  await symlink(target, temp);
  await rename(temp, link);
}

