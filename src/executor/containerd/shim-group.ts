/**
 * One shim for all of an executor's containers. The runc v2 shim serves
 * every container whose spec carries the same `io.containerd.runc.v2.group`
 * annotation (what Kubernetes does for a pod) and exits when its last
 * container is deleted; an anchor container, whose task is created but
 * never started, keeps it alive between runs. Starting a shim costs more
 * than a third of a short container's run.
 *
 * The anchor starts the group's shim, alone and before any other task:
 * two tasks of a group with no shim yet both start one, and the shim's
 * `start` races on the group's socket (one removes the socket the other is
 * still setting up), failing a task.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../../log.js';
import { currentOwner } from '../../owner.js';
import { buildOciSpec, ociJson, plainProcessMeta, renderMount } from '../oci-spec.js';
import { destroyContainer } from './cleanup.js';
import type { ContainerdApi, TaskOptions } from './client.js';
import { makeStateDir } from './process-dirs.js';

/** The annotation by which the runc v2 shim groups containers into one shim process. */
export const SHIM_GROUP_ANNOTATION = 'io.containerd.runc.v2.group';
/** The runtime containerd starts tasks with: the runc v2 shim. */
export const RUNTIME = 'io.containerd.runc.v2';
/** The label naming the kiln process (`currentOwner()`) that made a container. */
export const OWNER_LABEL = 'dev.kiln.owner';
/** The anchor's process: an empty executable file, looked up by runc but never run (the task is never started). */
const ANCHOR_PROCESS = '/anchor';

/** What a shim group needs. */
export interface ShimGroupOptions {
  readonly client: ContainerdApi;
  readonly stateDir: string;
  /** What the anchor's spec may grant (it runs nothing). */
  readonly capabilities: readonly string[];
  /** The runtime options of the anchor's task, as of every task of ours: the shim runs the runc they name for the anchor too. */
  readonly taskOptions: Promise<TaskOptions>;
  readonly logger: Logger | undefined;
}

/** The shim group of one executor, and its anchor. */
export class ShimGroup {
  readonly name = `kiln-${currentOwner()}-${randomBytes(4).toString('hex')}`;
  readonly #options: ShimGroupOptions;
  /** The anchor container, once asked for: its id, or undefined if it could not be made. */
  #anchor: Promise<string | undefined> | undefined;

  constructor(options: ShimGroupOptions) {
    this.#options = options;
  }

  /**
   * The annotations that put a container in the group, once the anchor is
   * there; none (a shim of its own) when the anchor could not be made.
   */
  async annotations(): Promise<Readonly<Record<string, string>> | undefined> {
    const anchor = await (this.#anchor ??= this.#createAnchor());
    return anchor === undefined ? undefined : { [SHIM_GROUP_ANNOTATION]: this.name };
  }

  /** Removes the anchor (its shim exits with it, once the last container is gone). */
  async close(): Promise<void> {
    const anchor = await this.#anchor;
    if (anchor === undefined) return;
    const { client, stateDir, logger } = this.#options;
    await destroyContainer(client, anchor).catch((err: unknown) => logger?.warn({ id: anchor, err }, 'cannot remove the anchor container'));
    await rm(path.join(stateDir, `${currentOwner()}-${anchor}`), { recursive: true, force: true });
  }

  /**
   * The anchor: its task is created (runc's init waits to be started,
   * holding nothing but a few namespaces) and never started. Its root is a
   * directory of ours with one empty executable file for runc to find.
   * Without it (it failed, logged) every container has a shim of its own.
   */
  async #createAnchor(): Promise<string | undefined> {
    const { client, stateDir, capabilities, taskOptions, logger } = this.#options;
    const id = `kiln-anchor-${randomBytes(6).toString('hex')}`;
    const dir = path.join(stateDir, `${currentOwner()}-${id}`);
    try {
      await makeStateDir(stateDir, path.basename(dir));
      const rootfs = path.join(dir, 'rootfs');
      await mkdir(rootfs);
      await writeFile(path.join(rootfs, ANCHOR_PROCESS), '', { mode: 0o755 });
      const hostsPath = path.join(dir, 'hosts');
      await writeFile(hostsPath, '');
      const spec = buildOciSpec({
        id,
        meta: plainProcessMeta([ANCHOR_PROCESS]),
        rootPath: 'rootfs',
        mounts: [],
        hostsPath,
        allCapabilities: capabilities,
        annotations: { [SHIM_GROUP_ANNOTATION]: this.name },
      });
      await client.createContainer({ id, labels: { [OWNER_LABEL]: currentOwner() }, runtime: RUNTIME, specJson: ociJson(spec) });
      await client.createTask(id, [renderMount({ type: 'bind', source: rootfs, readonly: false })], { stdin: '', stdout: '', stderr: '' }, await taskOptions);
      return id;
    } catch (err) {
      logger?.warn({ id, err }, 'cannot make the anchor container; each container starts a shim of its own');
      await destroyContainer(client, id).catch(() => {});
      await rm(dir, { recursive: true, force: true });
      return undefined;
    }
  }
}
