/**
 * Namespaces on a CNI network, made ahead of time and reused: setting one
 * up (a namespace with its loopback, the bridge plugin's veth and lease)
 * costs a few hundred milliseconds of process runs, which an exec op
 * should not wait for. A namespace whose container could not have
 * changed it goes back to the pool for the next container.
 *
 * Every namespace has a record beside it (written before CNI ADD runs),
 * named after its owner process: a later kiln that finds the record of a
 * dead owner runs CNI DEL from it (freeing the lease and the NAT rules; the
 * veth goes with the namespace) and removes the namespace, whatever point
 * the owner died at.
 *
 * Reusable namespaces also outlive the process (kiln has no daemon to keep a
 * pool in): when a pool closes, its spare namespaces are parked for the
 * next kiln on the host instead of torn down, up to `maxParked` host-wide.
 * Parking renames the record `OWNER-ID.json` to `parked-ID.json` (no owner,
 * so no sweep touches it); a pool that needs a namespace claims a parked one
 * by renaming it back to its own `OWNER-ID.json` (the rename is atomic: one
 * claimer wins), and only makes a new one (CNI ADD) when none is parked.
 * Only namespaces whose container could not change them are ever parked, and
 * a claimer checks the record was made for the same network and that its
 * veth is still on a bridge before using it.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import pLimit from 'p-limit';
import type { Logger } from '../log.js';
import { currentOwner, isOwnerAlive } from '../owner.js';
import { addNetworkList, type CniResult, type CniRuntime, delNetworkList, type NetworkConfigList } from './cni.js';
import { createNetns, removeNetns } from './netns.js';
import type { NetworkLease } from './types.js';

/** At most this many CNI set-ups or teardowns at once: they mostly wait on iptables' lock. */
const CNI_CONCURRENCY = 8;
/** How a parked namespace's record is named: `parked-ID.json`. */
const PARKED = 'parked-';
/** Default of NamespacePoolOptions.maxIdle and maxParked: the 16 stages of a wide build. */
const DEFAULT_KEPT = 16;

/** Options of a NamespacePool. */
export interface NamespacePoolOptions {
  /** Where namespaces, records and resolv.conf files live (on a tmpfs; shared by every kiln on the host). */
  readonly dir: string;
  readonly runtime: CniRuntime;
  readonly network: NetworkConfigList;
  /** The containers' resolv.conf text. */
  readonly resolvConf: string;
  /** Namespaces kept for reuse in this process; default 16. */
  readonly maxIdle?: number;
  /**
   * Namespaces left parked on the host for later kiln processes when this
   * pool closes (counted host-wide); default 16, 0 tears every one down.
   * Only for a network whose set-up kiln owns (its default bridge).
   */
  readonly maxParked?: number;
  readonly logger?: Logger;
}

/** What a record holds: enough to undo the set-up without the process that did it. */
interface NamespaceRecord {
  readonly containerId: string;
  readonly netns: string;
  readonly ifname: string;
  readonly network: NetworkConfigList;
  /** Where the plugins were: a sweep runs DEL with the same ones, whatever its own options. */
  readonly binDirs: readonly string[];
  readonly result?: CniResult;
}

interface PooledNamespace {
  /** The namespace's id: its file in `ns/`, the end of its record's name. */
  readonly id: string;
  /** Its record's name in `records/` while this process holds it: `OWNER-ID`. */
  readonly name: string;
  readonly record: NamespaceRecord;
  readonly address: string;
}

export class NamespacePool {
  readonly #options: NamespacePoolOptions;
  readonly #maxIdle: number;
  readonly #maxParked: number;
  readonly #limit = pLimit(CNI_CONCURRENCY);
  readonly #resolvConfPath: string;
  /** Ready or in the making, not lent; the most recently returned first. */
  #spare: Promise<PooledNamespace>[] = [];
  readonly #teardowns = new Set<Promise<void>>();
  /** The parked records found when this pool first claimed, not yet tried. */
  #parked: Promise<string[]> | undefined;
  #closed = false;

  private constructor(options: NamespacePoolOptions) {
    this.#options = options;
    this.#maxIdle = options.maxIdle ?? DEFAULT_KEPT;
    this.#maxParked = options.maxParked ?? DEFAULT_KEPT;
    this.#resolvConfPath = path.join(options.dir, 'resolv', `${currentOwner()}.conf`);
  }

  /**
   * Opens the pool. What dead kiln processes left in `dir` is swept by the
   * session when a worker starts (sweepDeadOwners), before any pool opens.
   */
  static async open(options: NamespacePoolOptions): Promise<NamespacePool> {
    const pool = new NamespacePool(options);
    for (const sub of ['ns', 'records', 'resolv']) await mkdir(path.join(options.dir, sub), { recursive: true, mode: 0o700 });
    await writeFile(pool.#resolvConfPath, options.resolvConf, { mode: 0o644 });
    return pool;
  }

  /** A namespace for one container: a spare one, else a parked one, else a new one. */
  async acquire(): Promise<NetworkLease> {
    const spare = this.#spare.shift();
    const ns = await (spare ?? this.#take());
    let released = false;
    return {
      namespacePath: ns.record.netns,
      resolvConfPath: this.#resolvConfPath,
      address: ns.address,
      release: ({ reusable }) => {
        if (released) return;
        released = true;
        if (reusable && !this.#closed && this.#spare.length < this.#maxIdle) this.#spare.unshift(Promise.resolve(ns));
        else this.#teardown(ns);
      },
    };
  }

  /** Claims or makes namespaces until `count` are spare (at most maxIdle). */
  prewarm(count: number): void {
    const wanted = Math.min(count, this.#maxIdle) - this.#spare.length;
    for (let i = 0; i < wanted && !this.#closed; i++) {
      const made = this.#take();
      // Awaited by whoever takes it; until then a failure must not be an unhandled rejection.
      made.catch(() => undefined);
      this.#spare.push(made);
    }
  }

  /**
   * Parks the spare namespaces for the next kiln (up to maxParked on the
   * host), tears down the rest, and waits for every teardown.
   */
  async close(): Promise<void> {
    this.#closed = true;
    const spare = this.#spare;
    this.#spare = [];
    const ready = (await Promise.allSettled(spare)).flatMap((made) => (made.status === 'fulfilled' ? [made.value] : []));
    let room = this.#maxParked > 0 && ready.length > 0 ? this.#maxParked - (await parkedRecordFiles(this.#options.dir)).length : 0;
    for (const ns of ready) {
      if (room > 0 && (await this.#park(ns))) room--;
      else this.#teardown(ns);
    }
    while (this.#teardowns.size > 0) await Promise.all(this.#teardowns);
    await rm(this.#resolvConfPath, { force: true });
  }

  /** A parked namespace claimed for this process, else a new one. */
  async #take(): Promise<PooledNamespace> {
    return (await this.#claim()) ?? (await this.#make());
  }

  /** Hands `ns` to whichever kiln claims it next; false when it could not be parked. */
  async #park(ns: PooledNamespace): Promise<boolean> {
    const records = path.join(this.#options.dir, 'records');
    try {
      await rename(path.join(records, `${ns.name}.json`), path.join(records, `${PARKED}${ns.id}.json`));
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Takes a parked namespace made for this network: a rename makes it this
   * process's (another claimer that renames first wins, and this one tries
   * the next). One made for another network, or whose veth has left its
   * bridge, is torn down.
   */
  async #claim(): Promise<PooledNamespace | undefined> {
    if (this.#maxParked === 0) return undefined;
    // Listed once per pool and shared: concurrent claimers each take the next
    // name instead of all racing for the first one.
    const parked = await (this.#parked ??= parkedRecordFiles(this.#options.dir));
    for (let file = parked.shift(); file !== undefined; file = parked.shift()) {
      const claimed = await claimParked(this.#options.dir, file);
      if (claimed === undefined) continue;
      const { id, name, record } = claimed;
      const address = record.result?.ips?.[0]?.address;
      if (address !== undefined && this.#fits(record)) return { id, name, record, address };
      this.#teardown({ id, name, record, address: '' });
    }
    return undefined;
  }

  /** Whether a parked namespace's record is one this pool would have made, still wired to its bridge. */
  #fits(record: NamespaceRecord): boolean {
    if (JSON.stringify(record.network) !== JSON.stringify(this.#options.network)) return false;
    if (JSON.stringify(record.binDirs) !== JSON.stringify(this.#options.runtime.binDirs)) return false;
    if (!existsSync(record.netns)) return false;
    // The host end of the veth (the interface not in the namespace that is not the bridge itself).
    const interfaces = (record.result?.['interfaces'] ?? []) as readonly { name?: string; sandbox?: string }[];
    const bridge = record.network.plugins[0]?.['bridge'];
    const veth = interfaces.find((i) => i.sandbox === undefined && i.name !== bridge)?.name;
    return veth !== undefined && !veth.includes('/') && existsSync(`/sys/class/net/${veth}/master`);
  }

  #make(): Promise<PooledNamespace> {
    return this.#limit(async () => {
      // No owner in the id: a namespace may pass from one process to another (parked, then claimed).
      const id = `n${randomBytes(6).toString('hex')}`;
      const name = `${currentOwner()}-${id}`;
      const netns = path.join(this.#options.dir, 'ns', id);
      const planned: NamespaceRecord = { containerId: `kiln-${id}`, netns, ifname: 'eth0', network: this.#options.network, binDirs: this.#options.runtime.binDirs };
      // The record first: a crash from here on leaves what a sweep needs to undo it.
      await writeRecord(this.#options.dir, name, planned);
      try {
        await createNetns(netns);
        const result = await addNetworkList(this.#options.runtime, planned.network, planned);
        const record = { ...planned, result };
        await writeRecord(this.#options.dir, name, record);
        return { id, name, record, address: result.ips?.[0]?.address ?? '' };
      } catch (err) {
        await undo(this.#options.dir, name, planned, this.#options.logger);
        throw err;
      }
    });
  }

  #teardown(ns: PooledNamespace): void {
    const done = this.#limit(() => undo(this.#options.dir, ns.name, ns.record, this.#options.logger)).finally(() => this.#teardowns.delete(done));
    this.#teardowns.add(done);
  }
}

async function writeRecord(dir: string, name: string, record: NamespaceRecord): Promise<void> {
  const file = path.join(dir, 'records', `${name}.json`);
  await writeFile(`${file}.tmp`, JSON.stringify(record), { mode: 0o600 });
  await rename(`${file}.tmp`, file);
}

/** CNI DEL (which needs the namespace), then the namespace, then the record. Never throws. */
async function undo(dir: string, name: string, record: NamespaceRecord, logger: Logger | undefined): Promise<void> {
  try {
    await delNetworkList({ binDirs: record.binDirs }, record.network, record, record.result);
  } catch (err) {
    logger?.warn({ namespace: name, err: (err as Error).message }, 'CNI DEL failed; removing the namespace anyway');
  }
  await removeNetns(record.netns).catch((err: unknown) => logger?.warn({ namespace: name, err: (err as Error).message }, 'cannot remove a network namespace'));
  await rm(path.join(dir, 'records', `${name}.json`), { force: true });
}

/**
 * Tears down every parked namespace in `dir` (CNI DEL, the namespace, the
 * record): `kiln prune --all`, whose user wants nothing of kiln's left on
 * the host. Each is claimed by the same rename a pool claims with, so one a
 * starting kiln takes at the same moment is that kiln's, not torn down
 * under it. Returns how many were removed.
 */
export async function removeParkedNamespaces(dir: string, logger: Logger | undefined): Promise<number> {
  let removed = 0;
  for (const file of await parkedRecordFiles(dir)) {
    const claimed = await claimParked(dir, file);
    if (claimed === undefined) continue;
    await undo(dir, claimed.name, claimed.record, logger);
    removed++;
  }
  return removed;
}

/** The records of the namespaces parked in `dir`: `parked-ID.json`. */
async function parkedRecordFiles(dir: string): Promise<string[]> {
  const files = await readdir(path.join(dir, 'records')).catch((): string[] => []);
  return files.filter((file) => file.startsWith(PARKED) && file.endsWith('.json'));
}

/**
 * Makes parked record `file` this process's by renaming it to
 * `OWNER-ID.json` (atomic: of two claimers, one wins) and reads it;
 * undefined when another claimer won or the record is unreadable (removed).
 */
async function claimParked(dir: string, file: string): Promise<{ id: string; name: string; record: NamespaceRecord } | undefined> {
  const records = path.join(dir, 'records');
  const id = file.slice(PARKED.length, -'.json'.length);
  const name = `${currentOwner()}-${id}`;
  try {
    await rename(path.join(records, file), path.join(records, `${name}.json`));
  } catch {
    return undefined;
  }
  try {
    return { id, name, record: JSON.parse(await readFile(path.join(records, `${name}.json`), 'utf8')) as NamespaceRecord };
  } catch {
    await rm(path.join(records, `${name}.json`), { force: true });
    return undefined;
  }
}

/**
 * Undoes every namespace in `dir` whose owner is dead, and removes their
 * resolv.conf files. Needs no provider: each record says how to undo it.
 * Cheap when there is nothing to sweep (three readdirs), so every kiln that
 * starts a worker runs it, whether or not its build needs a network.
 */
export async function sweepDeadOwners(dir: string, logger: Logger | undefined): Promise<void> {
  const records = await readdir(path.join(dir, 'records')).catch((): string[] => []);
  await Promise.all(
    records
      .filter((file) => !isOwnerAlive(file))
      .map(async (file) => {
        const name = file.replace(/\.json(\.tmp)?$/, '');
        const text = await readFile(path.join(dir, 'records', file), 'utf8').catch(() => undefined);
        if (file.endsWith('.tmp') || text === undefined) {
          await rm(path.join(dir, 'records', file), { force: true });
          return;
        }
        logger?.debug({ namespace: name }, 'removing the network namespace of a dead kiln process');
        await undo(dir, name, JSON.parse(text) as NamespaceRecord, logger);
      }),
  );
  // A namespace file without a record (the record was removed first by a crashed undo) goes too.
  for (const file of await readdir(path.join(dir, 'ns')).catch((): string[] => [])) {
    if (!isOwnerAlive(file) && !records.includes(`${file}.json`)) await removeNetns(path.join(dir, 'ns', file));
  }
  for (const file of await readdir(path.join(dir, 'resolv')).catch((): string[] => [])) {
    if (!isOwnerAlive(file)) await rm(path.join(dir, 'resolv', file), { force: true });
  }
}
