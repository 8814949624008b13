/**
 * Preparing an exec op's mounts the way BuildKit's execOp does: a writable
 * bind mount works on a fresh mutable snapshot of its input (the input never
 * changes), a readonly one on a view of the input itself, a selector mounts
 * only that path of it, and the mount that names an output becomes that
 * output once the process succeeds. A secret mount binds a file from a
 * private tmpfs (./secrets.ts), read-only; it never touches a snapshot. A
 * cache mount binds its persistent directory (./cache-mounts.ts), held
 * until the process is done.
 */
import { lstat } from 'node:fs/promises';
import type { CacheManager, MutableRef, ResultRef } from '../../cache/types.js';
import { assertNever, ERROR_CODES, KilnError } from '../../errors.js';
import { canMount } from '../../executor/oci-spec.js';
import type { ContainerMount, MountSupport } from '../../executor/types.js';
import { resolveInRoot } from '../../fs/safe-path.js';
import type { ExecMount } from '../../llb/types.js';
import { LayeredTree } from '../../fs/layered-tree.js';
import type { Mount } from '../../snapshot/types.js';
import type { CacheMountSeeder } from '../types.js';
import { emptyDir, inputAt } from '../inputs.js';
import { acquireCacheMount } from './cache-mounts.js';
import { ReleaseStack } from './release-stack.js';
import { missingSecretError, mountUse, type SecretFile, type Secrets, writeSecretFiles } from './secrets.js';

/**
 * The root of one run. A fresh snapshot is handed to the runtime as the
 * snapshot's own mounts (an overlay): runc or the containerd shim mounts it
 * inside the container, where it vanishes with the container, and kiln
 * spends no `mount`/`umount` on it. A root kiln must mount itself (a
 * selector, a stack too deep for one mount call) is a bind of that mount.
 */
export interface PreparedRoot {
  readonly mounts: readonly Mount[];
  /** The tree the process will see, readable before and after the run. */
  readonly tree: LayeredTree;
  /** The process must see the root read-only. */
  readonly readonly: boolean;
}


/** The mounts of one run, and what must be released after it. */
export interface PreparedMounts {
  /** The root filesystem: what the runtime mounts, and how kiln reads it meanwhile. */
  readonly root: PreparedRoot;
  /** Mounts on top of the root, parents before children. */
  readonly mounts: readonly ContainerMount[];
  /** The mutable snapshot behind each op output, by output index. */
  readonly outputs: readonly MutableRef[];
  /** Every writable snapshot (the root's and each writable bind mount's), by mount index. */
  readonly writable: ReadonlyMap<number, MutableRef>;
  /** Unmounts everything, removes the secret files and frees the cache mounts (idempotent); outputs stay uncommitted. */
  unmount(): Promise<void>;
  /** Unmounts, then discards whatever was not committed (idempotent). */
  release(): Promise<void>;
}

/** What `prepareMounts` works from. */
export interface PrepareMountsOptions {
  /** The op's name, for error messages and JSON paths. */
  readonly opName: string;
  readonly mounts: readonly ExecMount[];
  readonly inputs: readonly ResultRef[];
  readonly cache: CacheManager;
  /** Fills a new cache mount from an imported cache (before the input's seed). */
  readonly seedCacheMount?: CacheMountSeeder;
  /** What the op's new snapshots are described as (for `du`). */
  readonly description: string;
  readonly secrets: Secrets;
  /** Stops the preparation between steps; whatever was prepared is released. */
  readonly signal: AbortSignal;
  /** The op's ssh agent sockets, prepared by ./ssh.ts (it owns their lifetime). */
  readonly sshMounts: readonly ContainerMount[];
  /** What the executor can mount as it is (a deep root overlay may not be). */
  readonly support: MountSupport;
}

/**
 * Prepares every mount of the op. Everything made is pushed on one LIFO
 * stack as it is made: first the writable snapshots, then a stack of what
 * is mounted on them (dirs, cache mounts, secret files), which therefore
 * always goes first. On failure or cancellation half-way, whatever was
 * prepared is released, in reverse order, before the error propagates.
 */
export async function prepareMounts(options: PrepareMountsOptions): Promise<PreparedMounts> {
  const prepared = new ReleaseStack();
  try {
    const snapshots = await writableSnapshots(options, prepared);
    const mounted = prepared.use(new ReleaseStack());
    const { root, mounts } = await mountAll(options, snapshots, mounted);
    const outputs: MutableRef[] = [];
    for (const [index, spec] of options.mounts.entries()) {
      const mutable = snapshots.get(index);
      if (spec.type === 'bind' && spec.output >= 0 && mutable !== undefined) outputs[spec.output] = mutable;
    }
    return { root, mounts, outputs, writable: snapshots, unmount: () => mounted.release(), release: () => prepared.release() };
  } catch (err) {
    await prepared.release();
    throw err;
  }
}

/**
 * A fresh mutable snapshot of its input for each writable bind mount (by
 * mount index). The root is always one, even when the op marks it
 * readonly: the runtime must be able to create its mount points in it. The
 * executor is asked to present it read-only.
 */
async function writableSnapshots(options: PrepareMountsOptions, stack: ReleaseStack): Promise<Map<number, MutableRef>> {
  const snapshots = new Map<number, MutableRef>();
  for (const [index, spec] of options.mounts.entries()) {
    if (spec.type !== 'bind' || (spec.readonly && spec.dest !== '/')) continue;
    options.signal.throwIfAborted();
    snapshots.set(index, stack.use(await options.cache.newMutable(inputAt(options.inputs, spec.input), { description: options.description })));
  }
  return snapshots;
}

/** Mounts every mount of the op over `snapshots`, pushing what must be undone on `stack`. */
async function mountAll(
  options: PrepareMountsOptions,
  snapshots: ReadonlyMap<number, MutableRef>,
  stack: ReleaseStack,
): Promise<{ root: PreparedRoot; mounts: ContainerMount[] }> {
  const { opName, signal } = options;
  const mounts: ContainerMount[] = [];
  const secretMounts: SecretFile[] = [];
  let root: PreparedRoot | undefined;
  for (const [index, spec] of options.mounts.entries()) {
    signal.throwIfAborted();
    const field = `ops.${opName}.exec.mounts[${index}]`;
    switch (spec.type) {
      case 'bind': {
        const mutable = snapshots.get(index);
        const whole = spec.selector === '' || spec.selector === '/';
        const own = mutable !== undefined && spec.dest === '/' && whole ? await runtimeMountable(mutable, options.support) : undefined;
        if (own !== undefined) {
          root = { ...own, readonly: spec.readonly };
          break;
        }
        const input = inputAt(options.inputs, spec.input);
        const dir = stack.use(mutable !== undefined ? await mutable.mount() : input === null ? await emptyDir() : await input.mount());
        const source = await selected(dir.path, spec.selector, field);
        if (spec.dest === '/') root = { mounts: [{ type: 'bind', source, readonly: false }], tree: LayeredTree.ofDirectory(source), readonly: spec.readonly };
        else mounts.push({ destination: spec.dest, type: 'bind', source, readonly: spec.readonly });
        break;
      }
      case 'tmpfs':
        mounts.push({ destination: spec.dest, type: 'tmpfs', ...(spec.tmpfs.size > 0 ? { size: spec.tmpfs.size } : {}) });
        break;
      case 'secret': {
        const value = options.secrets.get(spec.secret.id);
        // As BuildKit does, an optional secret that was not given is simply not mounted.
        if (value === undefined && spec.secret.optional) break;
        if (value === undefined) throw missingSecretError(opName, mountUse(opName, index, spec.dest, spec.secret));
        secretMounts.push({ dest: spec.dest, value, uid: spec.secret.uid, gid: spec.secret.gid, mode: spec.secret.mode });
        break;
      }
      case 'cache': {
        const { ref, mount } = await acquireCacheMount(spec, inputAt(options.inputs, spec.input), options.cache, {
          signal,
          selected: (dir) => selected(dir, spec.selector, field),
          ...(options.seedCacheMount === undefined ? {} : { imported: options.seedCacheMount }),
        });
        stack.use(ref);
        mounts.push(mount);
        break;
      }
      case 'ssh':
        // Made by ./ssh.ts before the other mounts (an optional one may be absent).
        break;
      default:
        assertNever(spec, 'exec mount type');
    }
  }
  if (root === undefined) throw new KilnError(ERROR_CODES.INTERNAL, `op "${opName}" has no root mount`);
  if (secretMounts.length > 0) {
    signal.throwIfAborted();
    const files = await writeSecretFiles(secretMounts);
    stack.defer(() => files.remove());
    mounts.push(...files.mounts);
  }
  mounts.push(...options.sshMounts);
  // Parents first: a mount at /a/b must land inside one at /a, not under it.
  mounts.sort((a, b) => depth(a.destination) - depth(b.destination));
  return { root, mounts };
}

/** A snapshot's own mounts when the executor can mount them as they are and kiln can read them unmounted. */
async function runtimeMountable(mutable: MutableRef, support: MountSupport): Promise<{ mounts: readonly Mount[]; tree: LayeredTree } | undefined> {
  const mounts = await mutable.mounts();
  const tree = treeOfMounts(mounts);
  // Beyond what the runtime can mount, kiln mounts the root itself (with short paths) and binds it in.
  if (tree === undefined || !mounts.every((m) => canMount(support, m))) return undefined;
  return { mounts, tree };
}

/**
 * The tree that mounting `mounts` (a snapshot's, as the snapshotter gives
 * them) presents, or undefined for mounts kiln cannot read unmounted:
 * anything but one bind or one overlay with absolute layer paths.
 */
export function treeOfMounts(mounts: readonly Mount[]): LayeredTree | undefined {
  if (mounts.length !== 1) return undefined;
  const [m] = mounts as [Mount];
  switch (m.type) {
    case 'bind':
      return LayeredTree.ofDirectory(m.source);
    case 'overlay': {
      const layers = [...m.lower, ...(m.upper === undefined ? [] : [m.upper.dir])];
      if (layers.length === 0 || !layers.every((l) => l.startsWith('/'))) return undefined;
      return LayeredTree.ofOverlay(m);
    }
    case 'tmpfs':
      return undefined;
    default:
      return assertNever(m, 'mount type');
  }
}

/** The path a selector picks inside a mounted input (the whole input without one). */
async function selected(root: string, selector: string, field: string): Promise<string> {
  if (selector === '' || selector === '/') return root;
  const path = await resolveInRoot(root, selector);
  const exists = await lstat(path).then(
    () => true,
    () => false,
  );
  if (!exists) throw new KilnError(ERROR_CODES.PATH_NOT_FOUND, `selector "${selector}" does not exist in the mount's input`, { field: `${field}.selector` });
  return path;
}

function depth(path: string): number {
  return path.split('/').filter((p) => p !== '').length;
}
