/**
 * Build secrets for exec ops (`secret` mounts and `secretEnv`). Values come
 * from the caller (`--secret`) and live only in memory, in the process's
 * environment, and in files on a private tmpfs directory that is bound into
 * the container read-only and removed after the process: never on disk,
 * never under kiln's root, never in a snapshot or the cache (cache keys hold
 * only the ids).
 */
import { chmod, chown, lstat, mkdir, mkdtemp, readdir, rm, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ERROR_CODES, KilnError, MissingGrantError, OpError } from '../../errors.js';
import type { ContainerMount } from '../../executor/types.js';
import type { ExecOp } from '../../llb/types.js';
import { currentOwner, isOwnerAlive } from '../../owner.js';
import { exec as command } from '../../snapshot/command.js';

/** Secret values by id, as the caller gave them. */
export type Secrets = ReadonlyMap<string, Uint8Array>;

/** One place where an exec op uses a secret. */
export interface SecretUse {
  readonly id: string;
  readonly optional: boolean;
  /** The JSON path of the mount or secretEnv entry. */
  readonly field: string;
  /** How a person names it in a message, e.g. `the secret mount at /root/.npmrc`. */
  readonly what: string;
}

/** Every secret `exec` uses: its secret mounts, then its secretEnv entries. */
export function secretUses(opName: string, exec: ExecOp): SecretUse[] {
  const mounts = exec.mounts.flatMap((mount, index) => (mount.type === 'secret' ? [mountUse(opName, index, mount.dest, mount.secret)] : []));
  return [...mounts, ...exec.secretEnv.map((entry, index) => envUse(opName, index, entry))];
}

/** The use of a secret by the secret mount at `dest`. */
export function mountUse(opName: string, index: number, dest: string, secret: { readonly id: string; readonly optional: boolean }): SecretUse {
  return { id: secret.id, optional: secret.optional, field: `ops.${opName}.exec.mounts[${index}].secret.id`, what: `the secret mount at ${dest}` };
}

function envUse(opName: string, index: number, entry: ExecOp['secretEnv'][number]): SecretUse {
  return { id: entry.id, optional: entry.optional, field: `ops.${opName}.exec.secretEnv[${index}].id`, what: `secretEnv ${entry.name}` };
}

/** The error for a required secret the caller did not give. */
export function missingSecretError(opName: string, use: SecretUse): MissingGrantError {
  return new MissingGrantError(ERROR_CODES.SECRET, `op "${opName}" needs secret "${use.id}" for ${use.what}, but it was not given`, {
    op: opName,
    field: use.field,
    grant: { kind: 'secret', id: use.id },
  });
}

/**
 * The `NAME=value` entries of the op's secretEnv. An optional secret that
 * was not given leaves its variable unset.
 */
export function secretEnv(opName: string, exec: ExecOp, secrets: Secrets): string[] {
  const env: string[] = [];
  for (const [index, entry] of exec.secretEnv.entries()) {
    const value = secrets.get(entry.id);
    if (value === undefined) {
      if (entry.optional) continue;
      throw missingSecretError(opName, envUse(opName, index, entry));
    }
    // The kernel ends each environment string at its first NUL byte.
    if (value.includes(0)) {
      throw new OpError(ERROR_CODES.SECRET, `secret "${entry.id}" contains a NUL byte, so it cannot be the value of environment variable ${entry.name}; use a secret mount instead`, {
        op: opName,
        field: `ops.${opName}.exec.secretEnv[${index}]`,
      });
    }
    env.push(`${entry.name}=${Buffer.from(value).toString('utf8')}`);
  }
  return env;
}

/** A secret file to write: where it is mounted, its value, and the owner and mode the mount asks for. */
export interface SecretFile {
  /** Absolute path inside the container. */
  readonly dest: string;
  readonly value: Uint8Array;
  readonly uid: number;
  readonly gid: number;
  readonly mode: number;
}

/** The secret files of one run. */
export interface SecretFiles {
  /** A read-only bind of each file at its dest, in the order they were given. */
  readonly mounts: readonly Extract<ContainerMount, { type: 'bind' }>[];
  /** Deletes the files and their directory (idempotent). */
  remove(): Promise<void>;
}

/** The kernel's magic number for tmpfs (statfs f_type). */
const TMPFS_MAGIC = 0x01021994;
/** Where secret directories go when /dev/shm is a tmpfs: memory-backed, no mount needed. */
const SHM_PARENT = '/dev/shm/kiln-secrets';
/** Otherwise a small tmpfs is mounted for each run under here. */
const RUN_PARENT = '/run/kiln-secrets';

/**
 * Writes `files` into a new private directory on a tmpfs: /dev/shm when it
 * is one, else a tmpfs mounted for this run. The directory is named after
 * this process so that what a killed kiln left behind is removed the next
 * time secrets are written.
 */
export async function writeSecretFiles(files: readonly SecretFile[]): Promise<SecretFiles> {
  const ownMount = !(await isTmpfs('/dev/shm'));
  const parent = ownMount ? RUN_PARENT : SHM_PARENT;
  await mkdir(parent, { recursive: true, mode: 0o700 });
  // /dev/shm is writable by every user: one could have made this directory
  // (or a symlink) first, to read or redirect what is written in it.
  const info = await lstat(parent);
  if (!info.isDirectory() || info.uid !== process.getuid?.() || (info.mode & 0o077) !== 0) {
    throw new KilnError(ERROR_CODES.SECRET, `${parent} is not a private directory of this user (it must be a directory owned by uid ${process.getuid?.()} with mode 0700); remove it and build again`);
  }
  await removeDead(parent, ownMount);
  const dir = await mkdtemp(join(parent, `${currentOwner()}-`));
  let mounted = false;
  let removed = false;
  const remove = async (): Promise<void> => {
    if (removed) return;
    removed = true;
    if (mounted) await unmountTmpfs(dir);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    if (ownMount) {
      const size = files.reduce((sum, f) => sum + f.value.length, 0) + 64 * 1024;
      const result = await command({ file: 'mount', args: ['-t', 'tmpfs', '-o', `size=${size},mode=700,nosuid,nodev,noexec`, 'tmpfs', dir] });
      if (result.code !== 0) throw new KilnError(ERROR_CODES.SECRET, `cannot mount a tmpfs for secret files at ${dir}: ${result.stderr.trim()}`);
      mounted = true;
    }
    const mounts: Extract<ContainerMount, { type: 'bind' }>[] = [];
    for (const [index, file] of files.entries()) {
      const path = join(dir, String(index));
      await writeFile(path, file.value, { mode: 0o600, flag: 'wx' });
      await chown(path, file.uid, file.gid);
      // After chown, which clears set-id bits; chmod is not subject to the umask.
      await chmod(path, file.mode);
      mounts.push({ destination: file.dest, type: 'bind', source: path, readonly: true });
    }
    return { mounts, remove };
  } catch (err) {
    await remove();
    throw err;
  }
}

async function isTmpfs(path: string): Promise<boolean> {
  return statfs(path).then(
    (s) => s.type === TMPFS_MAGIC,
    () => false,
  );
}

/** Removes the secret directories of kiln processes that are gone. */
async function removeDead(parent: string, mounted: boolean): Promise<void> {
  for (const name of await readdir(parent)) {
    if (isOwnerAlive(name)) continue;
    const dir = join(parent, name);
    if (mounted) await unmountTmpfs(dir);
    await rm(dir, { recursive: true, force: true });
  }
}

/** Detaches the tmpfs at `dir`; one still in use goes once unused. Not mounted is fine. */
async function unmountTmpfs(dir: string): Promise<void> {
  const result = await command({ file: 'umount', args: [dir] });
  if (result.code !== 0) await command({ file: 'umount', args: ['-l', dir] });
}
