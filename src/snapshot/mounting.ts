/**
 * Mounting snapshots: how a snapshot is presented (a plain directory, or an
 * overlay of layer directories), mounting and unmounting with the system's
 * `mount`, and cleaning what crashed processes left mounted under kiln's root.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, rm, rmdir } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../log.js';
import { currentOwner, isOwnerAlive } from '../owner.js';
import { exec, run } from './command.js';
import type { BindMount, Mount, MountedDir, OverlayMount } from './types.js';

/**
 * The most mount options one mount call takes: the kernel copies one page
 * (4096 bytes) of them with the legacy mount call, less some room.
 */
export const MAX_MOUNT_OPTIONS = 4000;

/**
 * How to present a snapshot: a directory as it is (a bind), or an overlay of
 * layer directories. Paths are relative to the snapshotter's folder, so
 * overlay mounts can be made from there with short lowerdir options.
 */
export type MountSpec = BindMount | OverlayMount;

/**
 * The overlay's mount(2) options, each path as it is (relative to the
 * caller's cwd, or absolute). The one place an overlay becomes option strings
 * for mount(2); the OCI spec has its own renderer (executor/oci-spec.ts).
 */
export function overlayOptions(overlay: OverlayMount): string[] {
  const options = [`lowerdir=${overlay.lower.join(':')}`];
  if (overlay.upper !== undefined) options.push(`upperdir=${overlay.upper.dir}`, `workdir=${overlay.upper.work}`);
  return options;
}

/** `spec` with its paths made absolute against `base`: the mount an executor would make. */
export function resolveMount(base: string, spec: MountSpec): Mount {
  const resolve = (p: string): string => path.join(base, p);
  if (spec.type === 'bind') return { ...spec, source: resolve(spec.source) };
  return {
    type: 'overlay',
    lower: spec.lower.map(resolve),
    ...(spec.upper === undefined ? {} : { upper: { dir: resolve(spec.upper.dir), work: resolve(spec.upper.work) } }),
  };
}

/** A directory presented to a caller; `release` runs once, whatever the number of calls. */
export class MountedDirHandle implements MountedDir {
  readonly path: string;
  readonly #release: () => Promise<void>;
  #released: Promise<void> | undefined;

  constructor(dir: string, release: () => Promise<void>) {
    this.path = dir;
    this.#release = release;
  }

  release(): Promise<void> {
    this.#released ??= this.#release();
    return this.#released;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.release();
  }
}

/** A fresh, empty mountpoint `mountsDir/OWNER-RANDOM`. */
export async function makeMountpoint(mountsDir: string): Promise<string> {
  const dir = path.join(mountsDir, `${currentOwner()}-${randomBytes(6).toString('hex')}`);
  await mkdir(dir);
  return dir;
}

/**
 * Mounts an overlay at `target`. `mount` runs with `cwd` set to `base` and
 * the layer paths stay relative: the kernel resolves them against the
 * caller's cwd, and short paths keep deep stacks under the one-page limit of
 * mount options.
 */
export async function mountOverlay(
  base: string,
  spec: OverlayMount,
  target: string,
): Promise<void> {
  const options = overlayOptions(spec).join(',');
  await run(`cannot mount an overlay at ${target} (${options})`, {
    file: 'mount',
    args: ['-t', 'overlay', 'overlay', '-o', options, target],
    cwd: base,
  });
}

/**
 * Unmounts `target` and removes the mountpoint. A mount still busy (a
 * process that has not yet let go of a file) is retried briefly, then
 * detached lazily so it disappears once unused.
 */
export async function unmount(target: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const result = await exec({ file: 'umount', args: [target] });
    if (result.code === 0) break;
    if (!/busy/i.test(result.stderr) || attempt >= 4) {
      await run(`cannot unmount ${target}`, { file: 'umount', args: ['-l', target] });
      break;
    }
    await sleep(20 * (attempt + 1));
  }
  await rmdir(target);
}

/**
 * Cleans what dead processes left in ROOT/mounts and ROOT/tmp: their mounts
 * (found in /proc/self/mountinfo) are detached, then their entries removed.
 * Entries of live processes are never touched, and a mountpoint is only
 * ever removed with rmdir, so a mount that could not be detached can never
 * have its content deleted through it.
 */
export async function cleanDeadOwners(mountsDir: string, tmpDir: string, logger?: Logger): Promise<void> {
  const stale = (await mountpointsUnder([mountsDir, tmpDir])).filter((m) => !isOwnerAlive(m.entry));
  // Deepest first: a mount inside another mount must go before it.
  stale.sort((a, b) => b.path.length - a.path.length);
  const stuck = new Set<string>();
  for (const m of stale) {
    const result = await exec({ file: 'umount', args: ['-l', m.path] });
    if (result.code !== 0) {
      stuck.add(m.entry);
      logger?.warn({ path: m.path, stderr: result.stderr }, 'cannot detach a mount left by a dead process');
    }
  }
  for (const [dir, recursive] of [
    [mountsDir, false],
    [tmpDir, true],
  ] as const) {
    for (const name of await readdir(dir).catch(() => [])) {
      if (stuck.has(name) || isOwnerAlive(name)) continue;
      const entry = path.join(dir, name);
      await (recursive ? rm(entry, { recursive: true, force: true }) : rmdir(entry)).catch((err: unknown) => {
        logger?.warn({ path: entry, err }, 'cannot remove an entry left by a dead process');
      });
    }
  }
}

/** The mountpoints below `dirs` (this mount namespace), with the entry of `dir` each is in. */
async function mountpointsUnder(dirs: readonly string[]): Promise<{ path: string; entry: string }[]> {
  const found: { path: string; entry: string }[] = [];
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  for (const line of info.split('\n')) {
    const field = line.split(' ')[4];
    if (field === undefined) continue;
    // mountinfo escapes space, tab, newline and backslash as octal.
    const mountpoint = field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
    for (const dir of dirs) {
      if (mountpoint.startsWith(`${dir}/`)) {
        const entry = mountpoint.slice(dir.length + 1).split('/')[0] ?? '';
        found.push({ path: mountpoint, entry });
      }
    }
  }
  return found;
}
