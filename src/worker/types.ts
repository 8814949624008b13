/**
 * A worker bundles what runs ops: an executor, a snapshotter and the cache
 * manager over it. A plain readonly record,
 * not an interface with many methods.
 */
import type { CacheManager } from '../cache/types.js';
import type { Executor } from '../executor/types.js';
import type { NetworkProvider } from '../network/types.js';

export interface Worker {
  readonly id: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly platforms: readonly { readonly os: string; readonly architecture: string; readonly variant: string }[];
  readonly snapshotter: string;
  /** Runs exec ops; undefined when this worker cannot run processes. */
  readonly executor: Executor | undefined;
  readonly cache: CacheManager;
  /** What the executor's sandboxed containers get for a network. */
  readonly network: NetworkProvider;
}
