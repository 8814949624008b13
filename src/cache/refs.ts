/**
 * Ref handles. Each handle owns one hold in the manager's lease; releasing
 * it (once; later calls do nothing) gives the hold back. Using a released
 * handle is a bug and says so.
 */
import { ERROR_CODES, KilnError } from '../errors.js';
import type { Mount, MountedDir, SnapshotKey, SnapshotLayer, Snapshotter } from '../snapshot/types.js';
import type { Lease } from './leases.js';
import type { ImmutableRef, MutableRef } from './types.js';

/** What handles need from their manager. */
export interface RefHost {
  readonly snapshots: Snapshotter;
  readonly lease: Lease;
  /** A new, unused snapshot key. */
  newKey(): SnapshotKey;
  /** Records what made a committed snapshot (for `du`). */
  describe(key: SnapshotKey, description: string): void;
  /** Handles not yet released, so that closing the manager can release them. */
  readonly openRefs: Set<{ release(): Promise<void> }>;
  /** Reports a failure that must not fail the caller (the snapshot is collected later). */
  warn(message: string, err: unknown): void;
}

/** A handle on a committed snapshot; the caller has already acquired its hold. */
export class ImmutableHandle implements ImmutableRef {
  readonly id: SnapshotKey;
  readonly #host: RefHost;
  #released = false;

  constructor(host: RefHost, id: SnapshotKey) {
    this.#host = host;
    this.id = id;
    host.openRefs.add(this);
  }

  clone(): ImmutableRef {
    this.#assertLive();
    this.#host.lease.acquire([this.id]);
    return new ImmutableHandle(this.#host, this.id);
  }

  async mount(): Promise<MountedDir> {
    this.#assertLive();
    return this.#host.snapshots.mount(this.id, { readonly: true });
  }

  async mounts(): Promise<readonly Mount[]> {
    this.#assertLive();
    return this.#host.snapshots.mounts(this.id);
  }

  async layers(): Promise<readonly SnapshotLayer[]> {
    this.#assertLive();
    return this.#host.snapshots.layers(this.id);
  }

  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    this.#host.openRefs.delete(this);
    this.#host.lease.release(this.id);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.release();
  }

  #assertLive(): void {
    if (this.#released) throw usedAfterRelease(this.id);
  }
}

/** A handle on an active snapshot; the caller has already acquired its hold. */
export class MutableHandle implements MutableRef {
  readonly id: SnapshotKey;
  readonly #host: RefHost;
  readonly #description: string;
  readonly #mounts: readonly Mount[];
  #state: 'open' | 'committed' | 'released' = 'open';

  /** `mounts`: what the snapshotter's prepare() returned for `id`; they stay valid while the snapshot is active. */
  constructor(host: RefHost, id: SnapshotKey, description: string, mounts: readonly Mount[]) {
    this.#host = host;
    this.id = id;
    this.#description = description;
    this.#mounts = mounts;
    host.openRefs.add(this);
  }

  async mount(): Promise<MountedDir> {
    this.#assertOpen();
    return this.#host.snapshots.mount(this.id);
  }

  async mounts(): Promise<readonly Mount[]> {
    this.#assertOpen();
    return this.#mounts;
  }

  async commit(): Promise<ImmutableRef> {
    this.#assertOpen();
    const host = this.#host;
    const name = host.newKey();
    // Held before it exists, so no other process can take it for garbage.
    host.lease.acquire([name]);
    try {
      await host.snapshots.commit(name, this.id);
    } catch (err) {
      host.lease.release(name);
      throw err;
    }
    this.#state = 'committed';
    host.openRefs.delete(this);
    host.lease.release(this.id);
    host.describe(name, this.#description);
    return new ImmutableHandle(host, name);
  }

  async release(): Promise<void> {
    if (this.#state !== 'open') return;
    this.#state = 'released';
    const host = this.#host;
    host.openRefs.delete(this);
    try {
      await host.snapshots.remove(this.id);
    } catch (err) {
      // Unheld, it is garbage that the next sweep collects.
      host.warn(`cannot discard snapshot ${this.id}`, err);
    } finally {
      host.lease.release(this.id);
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.release();
  }

  #assertOpen(): void {
    if (this.#state !== 'open') throw usedAfterRelease(this.id);
  }
}

function usedAfterRelease(id: SnapshotKey): KilnError {
  return new KilnError(ERROR_CODES.INTERNAL, `ref ${id} used after it was committed or released`);
}
