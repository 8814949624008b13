/**
 * Leases: which snapshots each running cache manager holds (and which blobs
 * each session's content store uses), shared between processes through the
 * volatile store. A lease names its process by pid and
 * start time, so a lease whose process is gone (even if its pid was reused)
 * is recognised as dead and what it held is no longer protected.
 *
 * A hold is written before the snapshot it protects is created or handed
 * out, in its own (microsecond) transaction, so another process deciding
 * what to delete always sees it.
 *
 * All processes sharing a root must see each other's pids (one pid
 * namespace); a process in another namespace would look dead.
 */
import { randomBytes } from 'node:crypto';
import type { SnapshotKey } from '../snapshot/types.js';
import { currentOwner, processStartTime } from '../owner.js';
import type { KvEnv, KvTable } from '../store/store.js';

interface LeaseRecord {
  readonly pid: number;
  readonly startTime: string;
  readonly createdAt: number;
}

/** Hold keys are `LEASE\0KEY`; the value names what KEY is: a snapshotter's name, or `content` for a blob digest. */
const SEP = '\0';

function tables(env: KvEnv): { leases: KvTable<LeaseRecord>; holds: KvTable<string> } {
  return { leases: env.table('leases'), holds: env.table('holds') };
}

/** One process's lease: refcounted holds on keys of one kind (snapshots of one snapshotter, or blobs). */
export class Lease<K extends string = SnapshotKey> {
  readonly id: string;
  readonly #env: KvEnv;
  readonly #holds: KvTable<string>;
  readonly #leases: KvTable<LeaseRecord>;
  readonly #snapshotter: string;
  readonly #counts = new Map<K, number>();

  /** Registers a new lease for this process; `snapshotter` names the kind of key it holds. */
  constructor(env: KvEnv, snapshotter: string) {
    this.#env = env;
    ({ leases: this.#leases, holds: this.#holds } = tables(env));
    this.#snapshotter = snapshotter;
    this.id = `${currentOwner()}-${randomBytes(4).toString('hex')}`;
    const record: LeaseRecord = {
      pid: process.pid,
      startTime: processStartTime(process.pid) ?? '0',
      createdAt: Date.now(),
    };
    env.write(() => this.#leases.put(this.id, record));
  }

  /** Adds one hold on each of `keys` (a key may repeat); new holds are recorded before this returns. */
  acquire(keys: readonly K[]): void {
    const fresh: K[] = [];
    for (const key of keys) {
      const count = this.#counts.get(key) ?? 0;
      this.#counts.set(key, count + 1);
      if (count === 0) fresh.push(key);
    }
    if (fresh.length > 0) this.#env.write(() => fresh.forEach((key) => this.#holds.put(this.#holdKey(key), this.#snapshotter)));
  }

  /** Gives up one hold on `key`; the last one is erased from the store. */
  release(key: K): void {
    const count = this.#counts.get(key) ?? 0;
    if (count > 1) {
      this.#counts.set(key, count - 1);
    } else if (count === 1) {
      this.#counts.delete(key);
      this.#env.write(() => this.#holds.remove(this.#holdKey(key)));
    }
  }

  /** Erases the lease and all its holds. */
  close(): void {
    this.#counts.clear();
    removeLeases(this.#env, [this.id]);
  }

  #holdKey(key: K): string {
    return `${this.id}${SEP}${key}`;
  }
}

/** The snapshots of `snapshotter` held by leases of live processes, as of now. */
export function heldSnapshots(env: KvEnv, snapshotter: string): Set<SnapshotKey> {
  env.refresh();
  return heldKeys<SnapshotKey>(env, snapshotter);
}

/**
 * The keys of kind `kind` held by leases of live processes, as the current
 * transaction sees them (inside `env.write`, the latest; refresh first otherwise).
 */
export function heldKeys<K extends string>(env: KvEnv, kind: string): Set<K> {
  const { leases, holds } = tables(env);
  const alive = new Map<string, boolean>();
  const held = new Set<K>();
  for (const [holdKey, name] of holds.entries()) {
    if (name !== kind) continue;
    const sep = holdKey.indexOf(SEP);
    const lease = holdKey.slice(0, sep);
    let live = alive.get(lease);
    if (live === undefined) {
      live = isLive(leases.get(lease));
      alive.set(lease, live);
    }
    if (live) held.add(holdKey.slice(sep + 1) as K);
  }
  return held;
}

/** The ids of leases whose process is gone. */
export function deadLeases(env: KvEnv): string[] {
  env.refresh();
  return [...tables(env).leases.entries()].filter(([, record]) => !isLive(record)).map(([id]) => id);
}

/** Erases leases and their holds. */
export function removeLeases(env: KvEnv, ids: readonly string[]): void {
  const { leases, holds } = tables(env);
  env.write(() => {
    for (const id of ids) {
      for (const [holdKey] of [...holds.entries(`${id}${SEP}`)]) holds.remove(holdKey);
      leases.remove(id);
    }
  });
}

function isLive(record: LeaseRecord | undefined): boolean {
  return record !== undefined && processStartTime(record.pid) === record.startTime;
}
