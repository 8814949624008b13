/**
 * Cache mounts: persistent directories that exec ops mount read-write, keyed
 * by the mount's cache id, kept in kiln's root across builds and processes,
 * and never part of an output, a layer or a cache key. They are plain
 * directories, not snapshots, so the snapshotter's garbage collection never
 * sees them; `du` lists them and `prune` removes them.
 *
 *     ROOT/cache-mounts/KEY/N/fs/              instance N of the cache id hashed to KEY
 *     ROOT/cache-mounts/KEY/.new-TOKEN/fs/     an instance being made (and seeded)
 *     ROOT/cache-mounts/.trash-TOKEN/          a cache id being removed by prune
 *
 * An instance appears whole: it is made and seeded under a temporary name,
 * then renamed into place. The rename cannot replace an instance another
 * process made meanwhile (the target is never an empty directory, it holds
 * `fs/`), so the first one wins and the other is discarded.
 *
 * Who uses what is recorded in the volatile store, one record per user,
 * keyed `KEY\0INSTANCE\0TOKEN` with TOKEN = `OWNER-RANDOM` (see ../owner.ts):
 * a record whose process is gone (even SIGKILLed) is ignored, then erased,
 * so a dead holder never blocks anyone. Each decision is one write
 * transaction, which excludes every other process's:
 *
 * - `shared` uses instance 0, whoever else does;
 * - `locked` uses instance 0 once no other locked or private user holds it,
 *   and waits meanwhile (shared users do not take the lock, as in BuildKit);
 * - `private` uses the first instance nobody uses, else makes a new one;
 * - prune claims a whole cache id (instance `*`) only while nobody uses it,
 *   and users wait while it holds that claim.
 *
 * Waiting polls with a short backoff (5 ms doubling up to 200 ms); another
 * process's release cannot wake this one, and polling also notices holders
 * that died.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { chmod, lstat, mkdir, readdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { currentOwner, isOwnerAlive } from '../owner.js';
import { lockFile } from '../store/file-lock.js';
import { diskUsage } from '../snapshot/disk-usage.js';
import type { KvTable, Store } from '../store/store.js';
import type { CacheMountOptions, CacheMountRef, CacheMountSharing } from './types.js';

/** The instance shared and locked users get. */
const MAIN = '0';
/** The instance name of prune's claim on a whole cache id. */
const ALL = '*';
const SEP = '\0';
const FIRST_DELAY_MS = 5;
const MAX_DELAY_MS = 200;

type Claim = CacheMountSharing | 'remove';

/** What kiln remembers of a cache id (durable store). */
interface CacheMountRecord {
  readonly id: string;
  readonly createdAt: number;
  readonly lastUsedAt: number;
}

/** One cache id as `du` and `prune` see it. */
export interface CacheMountUsage {
  /** The cache id. */
  readonly id: string;
  /** Bytes of all its instances. */
  readonly size: number;
  readonly createdAt: number;
  readonly lastUsedAt: number;
  /** Some live process (this or another) uses it. */
  readonly inUse: boolean;
}

/** The key a cache id is stored under: a hash, so any id makes a safe folder name. */
export function cacheMountKey(id: string): string {
  return createHash('sha256').update(id).digest('hex').slice(0, 24);
}

/** The cache mounts of one root. */
export class CacheMounts {
  readonly #dir: string;
  readonly #store: Store;
  readonly #records: KvTable<CacheMountRecord>;
  readonly #users: KvTable<Claim>;
  readonly #open = new Set<CacheMountRef>();

  /** Cache mounts in `dir` (ROOT/cache-mounts), recorded in `store`. */
  constructor(dir: string, store: Store) {
    this.#dir = dir;
    this.#store = store;
    this.#records = store.durable.table('cache-mounts');
    this.#users = store.volatile.table('cache-mount-users');
  }

  /** Claims an instance of `options.id` (waiting as its sharing says), then makes sure it exists. */
  async acquire(options: CacheMountOptions): Promise<CacheMountRef> {
    const key = cacheMountKey(options.id);
    const token = `${currentOwner()}-${randomBytes(4).toString('hex')}`;
    const instance = await this.#claimWhenFree(key, options.sharing, token, options.signal);
    const userKey = [key, instance, token].join(SEP);
    const unclaim = (): void => this.#store.volatile.write(() => this.#users.remove(userKey));
    let dir: string;
    try {
      const now = Date.now();
      this.#store.durable.write(() => {
        const known = this.#records.get(key);
        this.#records.put(key, { id: options.id, createdAt: known?.createdAt ?? now, lastUsedAt: now });
      });
      dir = await this.#ensureInstance({ key, instance, token, seed: options.seed, signal: options.signal });
    } catch (err) {
      unclaim();
      throw err;
    }
    let released = false;
    const ref: CacheMountRef = {
      path: dir,
      release: async () => {
        if (released) return;
        released = true;
        this.#open.delete(ref);
        unclaim();
      },
      [Symbol.asyncDispose]: () => ref.release(),
    };
    this.#open.add(ref);
    return ref;
  }

  /** Whether cache id `id` has a directory in this root (its main instance: what shared and locked users get). */
  async exists(id: string): Promise<boolean> {
    return exists(path.join(this.#dir, cacheMountKey(id), MAIN, 'fs'));
  }

  /** Every recorded cache id by key, measured now. */
  async usage(): Promise<Map<string, CacheMountUsage>> {
    this.#store.durable.refresh();
    this.#store.volatile.refresh();
    const used = new Set<string>();
    for (const [userKey] of this.#users.entries()) {
      if (isOwnerAlive(tokenOf(userKey))) used.add(userKey.slice(0, userKey.indexOf(SEP)));
    }
    const usage = new Map<string, CacheMountUsage>();
    for (const [key, record] of [...this.#records.entries()]) {
      let size = 0;
      for (const instance of instancesIn(path.join(this.#dir, key))) {
        // A prune in another process may remove it meanwhile; then it counts nothing.
        size += (await diskUsage(path.join(this.#dir, key, instance, 'fs')).catch(() => ({ size: 0 }))).size;
      }
      usage.set(key, { ...record, size, inUse: used.has(key) });
    }
    return usage;
  }

  /**
   * Removes the cache ids `keys` that nobody uses at this moment (checked
   * under prune's claim, so no build can start using one halfway); returns
   * the keys removed.
   */
  async remove(keys: readonly string[]): Promise<string[]> {
    const removed: string[] = [];
    for (const key of keys) {
      const token = `${currentOwner()}-${randomBytes(4).toString('hex')}`;
      if (this.#store.volatile.write(() => this.#claim(key, 'remove', token)) === undefined) continue;
      const trash = path.join(this.#dir, `.trash-${token}`);
      try {
        // Renamed away first: the claim is held only for two metadata writes.
        await rename(path.join(this.#dir, key), trash).catch((err: unknown) => {
          if (!isCode(err, 'ENOENT')) throw err;
        });
        this.#store.durable.write(() => this.#records.remove(key));
        removed.push(key);
      } finally {
        this.#store.volatile.write(() => this.#users.remove([key, ALL, token].join(SEP)));
      }
      await rm(trash, { recursive: true, force: true });
    }
    // What a prune killed midway left.
    for (const name of await readdir(this.#dir).catch(() => [])) {
      if (name.startsWith('.trash-') && !isOwnerAlive(name.slice('.trash-'.length))) await rm(path.join(this.#dir, name), { recursive: true, force: true });
    }
    return removed;
  }

  /** Releases every cache mount still held. */
  async close(): Promise<void> {
    await Promise.all([...this.#open].map((ref) => ref.release()));
  }

  /** Retries the claim until it is granted, pausing longer each time. */
  async #claimWhenFree(key: string, sharing: CacheMountSharing, token: string, signal: AbortSignal | undefined): Promise<string> {
    for (let delay = FIRST_DELAY_MS; ; delay = Math.min(delay * 2, MAX_DELAY_MS)) {
      signal?.throwIfAborted();
      const instance = this.#store.volatile.write(() => this.#claim(key, sharing, token));
      if (instance !== undefined) return instance;
      // An abort rejects the pause; the check above then throws its reason.
      await sleep(delay, undefined, signal === undefined ? {} : { signal }).catch(() => undefined);
    }
  }

  /** Inside a volatile write: the instance granted to `token` (recorded), or undefined to wait. */
  #claim(key: string, claim: Claim, token: string): string | undefined {
    const users: { instance: string; claim: Claim }[] = [];
    for (const [userKey, value] of [...this.#users.entries(`${key}${SEP}`)]) {
      if (isOwnerAlive(tokenOf(userKey))) users.push({ instance: userKey.split(SEP)[1] ?? '', claim: value });
      else this.#users.remove(userKey);
    }
    if (users.some((u) => u.instance === ALL)) return undefined;
    const instance = this.#grant(key, claim, users);
    if (instance !== undefined) this.#users.put([key, instance, token].join(SEP), claim);
    return instance;
  }

  #grant(key: string, claim: Claim, users: readonly { instance: string; claim: Claim }[]): string | undefined {
    switch (claim) {
      case 'shared':
        return MAIN;
      case 'locked':
        return users.some((u) => u.instance === MAIN && u.claim !== 'shared') ? undefined : MAIN;
      case 'remove':
        return users.length === 0 ? ALL : undefined;
      case 'private': {
        const busy = new Set(users.map((u) => u.instance));
        const existing = instancesIn(path.join(this.#dir, key));
        const free = existing.find((n) => !busy.has(n));
        if (free !== undefined) return free;
        let n = 0;
        while (busy.has(String(n)) || existing.includes(String(n))) n++;
        return String(n);
      }
    }
  }

  /**
   * The instance's directory, made (and seeded) under a temporary name if it
   * does not exist yet. Seeding (from an imported cache) is done once: two
   * users first meeting the same new instance, in this process or another,
   * take the instance's file lock in turn, and the second finds it made.
   */
  async #ensureInstance(options: {
    readonly key: string;
    readonly instance: string;
    readonly token: string;
    readonly seed: CacheMountOptions['seed'];
    readonly signal: AbortSignal | undefined;
  }): Promise<string> {
    const { key, instance, token, seed } = options;
    const keyDir = path.join(this.#dir, key);
    const dir = path.join(keyDir, instance, 'fs');
    if (await exists(dir)) return dir;
    await mkdir(keyDir, { recursive: true });
    // An empty instance made twice costs nothing; a seeded one costs a download and a copy.
    await using _seeding = seed === undefined ? undefined : await lockFile(path.join(keyDir, `.seed-${instance}.lock`), options.signal ?? new AbortController().signal);
    if (await exists(dir)) return dir;
    for (const name of await readdir(keyDir)) {
      if (name.startsWith('.new-') && !isOwnerAlive(name.slice('.new-'.length))) await rm(path.join(keyDir, name), { recursive: true, force: true });
    }
    const fresh = path.join(keyDir, `.new-${token}`);
    try {
      await mkdir(path.join(fresh, 'fs'), { recursive: true });
      // A new cache directory looks like any directory a root process makes.
      await chmod(path.join(fresh, 'fs'), 0o755);
      await seed?.(path.join(fresh, 'fs'));
      await rename(fresh, path.join(keyDir, instance)).catch((err: unknown) => {
        // Another process made it first: theirs stands.
        if (!isCode(err, 'EEXIST') && !isCode(err, 'ENOTEMPTY')) throw err;
      });
    } finally {
      await rm(fresh, { recursive: true, force: true });
    }
    return dir;
  }
}

/** The numbered instances in a cache id's folder, in order (synchronous: it is read inside transactions). */
function instancesIn(keyDir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(keyDir);
  } catch {
    return [];
  }
  return names.filter((n) => /^\d+$/.test(n)).sort((a, b) => Number(a) - Number(b));
}

function tokenOf(userKey: string): string {
  return userKey.slice(userKey.lastIndexOf(SEP) + 1);
}

function exists(p: string): Promise<boolean> {
  return lstat(p).then(
    () => true,
    () => false,
  );
}

function isCode(err: unknown, code: string): boolean {
  return err instanceof Error && (err as NodeJS.ErrnoException).code === code;
}
