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
import type { CacheManager, CacheMountRef, MutableRef, ResultRef } from '../../cache/types.js';
import { assertNever, ERROR_CODES, KilnError } from '../../errors.js';
import { canMount } from '../../executor/oci-spec.js';
import type { ContainerMount, MountSupport } from '../../executor/types.js';
import { resolveInRoot } from '../../fs/safe-path.js';
import type { ExecMount } from '../../llb/types.js';
import { LayeredTree } from '../../fs/layered-tree.js';
import type { Mount, MountedDir } from '../../snapshot/types.js';
import { emptyDir, inputAt } from '../inputs.js';
import { acquireCacheMount } from './cache-mounts.js';
import { missingSecretError, mountUse, type SecretFile, type SecretFiles, type Secrets, writeSecretFiles } from './secrets.js';

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
  /** Unmounts everything, removes the secret files and frees the cache mounts (idempotent); outputs stay uncommitted. */
  unmount(): Promise<void>;
  /** Unmounts and discards whatever was not committed. */
  release(): Promise<void>;
}

/**
 * Mounts every bind, tmpfs and secret mount of the op. On failure, whatever
 * was prepared is released before the error propagates.
 */
export async function prepareMounts(
  opName: string,
  specs: readonly ExecMount[],
  inputs: readonly ResultRef[],
  cache: CacheManager,
  description: string,
  secrets: Secrets,
  signal: AbortSignal,
  /** The op's ssh agent sockets, prepared by ./ssh.ts (it owns their lifetime). */
  sshMounts: readonly ContainerMount[],
  support: MountSupport,
): Promise<PreparedMounts> {
  const mounted: MountedDir[] = [];
  const mutables: MutableRef[] = [];
  const outputs: MutableRef[] = [];
  const mounts: ContainerMount[] = [];
  const secretMounts: SecretFile[] = [];
  const cacheMounts: CacheMountRef[] = [];
  let secretFiles: SecretFiles | undefined;
  let root: PreparedRoot | undefined;

  const unmount = async (): Promise<void> => {
    await secretFiles?.remove();
    for (const dir of mounted.splice(0).reverse()) await dir.release();
    for (const ref of cacheMounts.splice(0).reverse()) await ref.release();
  };
  const release = async (): Promise<void> => {
    await unmount();
    for (const ref of mutables.splice(0).reverse()) await ref.release();
  };

  try {
    for (const [index, spec] of specs.entries()) {
      const field = `ops.${opName}.exec.mounts[${index}]`;
      switch (spec.type) {
        case 'bind': {
          let dir: MountedDir;
          // The root is always a private writable snapshot, even when the op
          // marks it readonly: the runtime must be able to create its mount
          // points in it. The executor is asked to present it read-only.
          if (spec.readonly && spec.dest !== '/') {
            const input = inputAt(inputs, spec.input);
            dir = input === null ? await emptyDir() : await input.mount();
          } else {
            const mutable = await cache.newMutable(inputAt(inputs, spec.input), { description });
            mutables.push(mutable);
            if (spec.output >= 0) outputs[spec.output] = mutable;
            if (spec.dest === '/' && (spec.selector === '' || spec.selector === '/')) {
              const own = await runtimeMountable(mutable, support);
              if (own !== undefined) {
                root = { ...own, readonly: spec.readonly };
                break;
              }
            }
            dir = await mutable.mount();
          }
          mounted.push(dir);
          const source = await selected(dir.path, spec.selector, field);
          if (spec.dest === '/') {
            root = { mounts: [{ type: 'bind', source, readonly: false }], tree: LayeredTree.ofDirectory(source), readonly: spec.readonly };
          } else mounts.push({ destination: spec.dest, type: 'bind', source, readonly: spec.readonly });
          break;
        }
        case 'tmpfs':
          mounts.push({ destination: spec.dest, type: 'tmpfs', ...(spec.tmpfs !== undefined && spec.tmpfs.size > 0 ? { size: spec.tmpfs.size } : {}) });
          break;
        case 'secret': {
          if (spec.secret === undefined) throw new KilnError(ERROR_CODES.INTERNAL, `secret mount ${field} has no secret options`);
          const value = secrets.get(spec.secret.id);
          // As BuildKit does, an optional secret that was not given is simply not mounted.
          if (value === undefined && spec.secret.optional) break;
          if (value === undefined) throw missingSecretError(opName, mountUse(opName, index, spec.dest, spec.secret));
          secretMounts.push({ dest: spec.dest, value, uid: spec.secret.uid, gid: spec.secret.gid, mode: spec.secret.mode });
          break;
        }
        case 'cache': {
          const { ref, mount } = await acquireCacheMount(spec, inputAt(inputs, spec.input), cache, {
            field,
            signal,
            selected: (root) => selected(root, spec.selector, field),
          });
          cacheMounts.push(ref);
          mounts.push(mount);
          break;
        }
        case 'ssh':
          // Made by ./ssh.ts before the other mounts (an optional one may be absent).
          break;
      }
    }
    if (root === undefined) throw new KilnError(ERROR_CODES.INTERNAL, `op "${opName}" has no root mount`);
    if (secretMounts.length > 0) {
      secretFiles = await writeSecretFiles(secretMounts);
      mounts.push(...secretFiles.mounts);
    }
    mounts.push(...sshMounts);
    // Parents first: a mount at /a/b must land inside one at /a, not under it.
    mounts.sort((a, b) => depth(a.destination) - depth(b.destination));
    return { root, mounts, outputs, unmount, release };
  } catch (err) {
    await release();
    throw err;
  }
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
