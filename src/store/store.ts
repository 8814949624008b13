/**
 * kiln's embedded store: two lmdb environments under ROOT/store.
 *
 * - `durable` holds what must survive anything (snapshot records, results,
 *   metadata). Commits are synced; a process killed at any point leaves the
 *   last committed transaction intact (lmdb's copy-on-write B-tree). The
 *   meta page is synced with the next commit rather than with its own
 *   (lmdb's `noMetaSync`): one fsync per commit instead of two, at the price
 *   of the last commit before a power loss, never the store's integrity.
 *   Several commits are made on every exec op.
 * - `volatile` holds what only matters while processes run (leases and the
 *   snapshots they hold). It is never synced, which makes a write transaction
 *   cost microseconds, so every ref can be recorded at once. It lives in a
 *   folder named for the boot: a new boot starts with an empty one, because
 *   no process of an earlier boot can hold anything.
 *
 * Both are safe to share between processes: lmdb serializes write
 * transactions with a lock in the environment, and readers see whole commits.
 */
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { createRequire } from 'node:module';
import type { Database, RootDatabase } from 'lmdb';

// lmdb ships a single-file CommonJS build; requiring it loads one file where
// its ESM entry loads dozens, which is a visible share of a cached build.
const { open } = requireLmdb();
import { ERROR_CODES, KilnError } from '../errors.js';
import { bootId } from '../owner.js';

/** One named table of an environment: string keys, structured (msgpack) values. */
export interface KvTable<V> {
  get(key: string): V | undefined;
  /** Inside `write()` the put joins that transaction; outside it commits on its own. */
  put(key: string, value: V): void;
  remove(key: string): void;
  /** Entries in key order; with `prefix`, only the keys that start with it. */
  entries(prefix?: string): Iterable<readonly [string, V]>;
}

/** An lmdb environment: tables and synchronous write transactions. */
export interface KvEnv {
  table<V>(name: string): KvTable<V>;
  /**
   * Runs `fn` in one write transaction, which excludes every other writer
   * (in any process) until it commits; reads inside see the latest commits.
   * If `fn` throws, nothing it wrote is kept.
   */
  write<T>(fn: () => T): T;
  /** Makes the next reads see every transaction committed so far, by any process. */
  refresh(): void;
}

/** kiln's store: durable records and per-boot volatile ones. */
export interface Store {
  readonly durable: KvEnv;
  readonly volatile: KvEnv;
  close(): Promise<void>;
}

const DURABLE_DIR = 'durable';
const VOLATILE_PREFIX = 'leases-';

/**
 * lmdb, without msgpackr's native unpacker (msgpackr-extract): kiln's
 * records are small, where the JS unpacker is as fast, and loading the
 * addon (resolving its package, detecting the libc, dlopen) cost every
 * start a few milliseconds. msgpackr reads the switch only from the
 * environment, when it is first loaded; it is put back at once, so no
 * child process inherits it.
 */
function requireLmdb(): typeof import('lmdb') {
  const SWITCH = 'MSGPACKR_NATIVE_ACCELERATION_DISABLED';
  const before = process.env[SWITCH];
  process.env[SWITCH] = 'true';
  try {
    return createRequire(import.meta.url)('lmdb') as typeof import('lmdb');
  } finally {
    if (before === undefined) delete process.env[SWITCH];
    else process.env[SWITCH] = before;
  }
}

/** Opens (creating if needed) the store in `dir` (ROOT/store). */
export async function openStore(dir: string): Promise<Store> {
  const volatileDir = `${VOLATILE_PREFIX}${bootId()}`;
  await removeEarlierBoots(dir, volatileDir);
  const durable = openEnv(path.join(dir, DURABLE_DIR), { noMetaSync: true });
  let volatile: LmdbEnv;
  try {
    volatile = openEnv(path.join(dir, volatileDir), { noSync: true, useWritemap: true });
  } catch (err) {
    await durable.close();
    throw err;
  }
  return {
    durable,
    volatile,
    async close() {
      await Promise.all([durable.close(), volatile.close()]);
    },
  };
}

/** Leases of an earlier boot name processes that no longer exist. */
async function removeEarlierBoots(dir: string, current: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  await Promise.all(
    names
      .filter((n) => n.startsWith(VOLATILE_PREFIX) && n !== current)
      .map((n) => rm(path.join(dir, n), { recursive: true, force: true })),
  );
}

class LmdbEnv implements KvEnv {
  readonly #root: RootDatabase;
  readonly #tables = new Map<string, LmdbTable<unknown>>();

  constructor(root: RootDatabase) {
    this.#root = root;
  }

  table<V>(name: string): KvTable<V> {
    let table = this.#tables.get(name);
    if (table === undefined) {
      table = new LmdbTable(this.#root.openDB<unknown, string>({ name }));
      this.#tables.set(name, table);
    }
    return table as KvTable<V>;
  }

  write<T>(fn: () => T): T {
    return this.#root.transactionSync(fn);
  }

  refresh(): void {
    this.#root.resetReadTxn();
  }

  close(): Promise<void> {
    return this.#root.close();
  }
}

class LmdbTable<V> implements KvTable<V> {
  readonly #db: Database<V, string>;

  constructor(db: Database<V, string>) {
    this.#db = db;
  }

  get(key: string): V | undefined {
    return this.#db.get(key);
  }

  put(key: string, value: V): void {
    this.#db.putSync(key, value);
  }

  remove(key: string): void {
    this.#db.removeSync(key);
  }

  *entries(prefix = ''): Iterable<readonly [string, V]> {
    for (const { key: raw, value } of this.#db.getRange({ start: prefix })) {
      // lmdb's key encoding uses the 0 byte between the parts of an array
      // key, and reads a long enough string key holding one back as an
      // array (`LEASE\0sha256:...` comes back as two strings): join it again.
      const key = Array.isArray(raw) ? (raw as unknown[]).join('\0') : raw;
      if (!key.startsWith(prefix)) return;
      yield [key, value];
    }
  }
}

function openEnv(dir: string, options: { noSync?: boolean; noMetaSync?: boolean; useWritemap?: boolean }): LmdbEnv {
  try {
    return new LmdbEnv(open<unknown, string>({ path: dir, maxDbs: 32, ...options }));
  } catch (err) {
    throw new KilnError(
      ERROR_CODES.CACHE_STORE,
      `cannot open kiln's store at ${dir}: ${err instanceof Error ? err.message : String(err)}`,
      { cause: err },
    );
  }
}
