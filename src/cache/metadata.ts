/** The MetadataStore: small namespaced values in the durable store. */
import { ERROR_CODES, KilnError } from '../errors.js';
import type { KvEnv, KvTable } from '../store/store.js';
import type { MetadataStore } from './types.js';

/** lmdb refuses keys over 1978 bytes; keep a margin for the namespace separator. */
const MAX_KEY_BYTES = 1900;

/** A MetadataStore over the `metadata` table of `env`. */
export class StoreMetadata implements MetadataStore {
  readonly #table: KvTable<unknown>;

  constructor(env: KvEnv) {
    this.#table = env.table('metadata');
  }

  get<T>(namespace: string, key: string): T | undefined {
    return this.#table.get(keyOf(namespace, key)) as T | undefined;
  }

  async put(namespace: string, key: string, value: unknown): Promise<void> {
    this.#table.put(keyOf(namespace, key), value);
  }

  async remove(namespace: string, key: string): Promise<void> {
    this.#table.remove(keyOf(namespace, key));
  }
}

function keyOf(namespace: string, key: string): string {
  const full = `${namespace}\0${key}`;
  if (Buffer.byteLength(full) > MAX_KEY_BYTES) {
    throw new KilnError(
      ERROR_CODES.CACHE_STORE,
      `metadata key too long (${Buffer.byteLength(full)} bytes, at most ${MAX_KEY_BYTES}) in namespace ${namespace}: ${key.slice(0, 80)}...; hash it first`,
    );
  }
  return full;
}
