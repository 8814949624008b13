/**
 * A fake of the solver's ResultCache for unit tests: values by key in memory,
 * and every handle counted, so a test can check each was released exactly
 * once. It passes the same contract suite as the real cache
 * (test/unit/cache/result-cache-contract.ts), so a solver test that passes
 * with it says something about the real one.
 */
import type { CacheKey } from '../../src/digest.js';
import type { ResultCache } from '../../src/solver/types.js';

/** A refcounted fake result: each handle must be released exactly once. */
export class Handle {
  readonly value: string;
  released = 0;
  constructor(value: string) {
    this.value = value;
  }
}

/** A result cache that remembers values by key and tracks every handle it or an op made. */
export class FakeCache implements ResultCache<Handle> {
  readonly store = new Map<CacheKey, string[]>();
  readonly handles: Handle[] = [];
  loads: CacheKey[] = [];
  saves: CacheKey[] = [];

  /** A new handle on `value` (as an op's run makes one). */
  handle(value: string): Handle {
    const handle = new Handle(value);
    this.handles.push(handle);
    return handle;
  }
  async load(key: CacheKey): Promise<readonly Handle[] | undefined> {
    this.loads.push(key);
    return this.store.get(key)?.map((value) => this.handle(value));
  }
  /** As the real cache: the latest save of a key wins (an ignoreCache rerun replaces the record). */
  async save(key: CacheKey, outputs: readonly Handle[]): Promise<void> {
    this.saves.push(key);
    this.store.set(key, outputs.map((o) => o.value));
  }
  async release(result: Handle): Promise<void> {
    result.released += 1;
  }
  retain(result: Handle): Handle {
    return this.handle(result.value);
  }
  /** Handles not released exactly once (the caller releases what solve handed over first). */
  unbalanced(): Handle[] {
    return this.handles.filter((h) => h.released !== 1);
  }
}
