/**
 * A worker bundles what runs ops: an executor (none until the executor issue
 * lands), a snapshotter and the cache manager over it. A plain readonly record,
 * not an interface with many methods.
 */
import type { CacheManager } from '../cache/types.js';

export interface Worker {
  readonly id: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly platforms: readonly { readonly os: string; readonly architecture: string; readonly variant: string }[];
  readonly snapshotter: string;
  /** The executor's name, or undefined when this worker cannot run exec ops. */
  readonly executor: string | undefined;
  readonly cache: CacheManager;
}
