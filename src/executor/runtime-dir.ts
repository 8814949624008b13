/**
 * Where executors keep what only lives while containers run: OCI bundles
 * (whose config.json holds `secretEnv` values in plain text), runc's state,
 * FIFOs and hosts files. It is a directory on a tmpfs, never under kiln's
 * root: memory-backed, so a value in it never reaches a disk, and gone at
 * reboot together with the containers it describes. Each root gets its own
 * directory, named after a hash of the root's path, so that two roots never
 * clean each other's containers.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstat, mkdir, statfs, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ERROR_CODES, KilnError } from '../errors.js';

/** Where runtime directories go by default: under /run, as runc's and containerd's own state. */
export const RUNTIME_BASE = '/run/kiln';
/** The kernel's magic numbers (statfs f_type) of memory-backed filesystems. */
const MEMORY_FS_TYPES: ReadonlySet<number> = new Set([0x01021994 /* tmpfs */, 0x858458f6 /* ramfs */]);
/**
 * The size of the tmpfs kiln mounts when `base` is on a disk. Bundles are a
 * few tens of kilobytes (most of it the seccomp profile), and a tmpfs only
 * uses memory for what it holds; this is a ceiling, not a reservation.
 */
const FALLBACK_TMPFS_SIZE = '64m';

/** Options of `executorRuntimeDir`. */
export interface RuntimeDirOptions {
  /** kiln's root: the directory is named after its absolute path. */
  readonly root: string;
  /** The executor's name (`runc`, `containerd`): one directory each. */
  readonly executor: string;
  /** The parent of every root's directory; default RUNTIME_BASE. Tests give their own. */
  readonly base?: string;
}

/** The runtime directory of `root`'s executor `executor` under `base`, without touching the filesystem. */
export function runtimeDirPath(options: RuntimeDirOptions): string {
  return path.join(options.base ?? RUNTIME_BASE, rootHash(options.root), options.executor);
}

/**
 * Makes (if needed) and returns the runtime directory of an executor of
 * `root`: BASE/HASH/EXECUTOR, mode 0700. BASE must be on a tmpfs: when it
 * is not (a host whose /run is on disk), a tmpfs is mounted at BASE first,
 * once for every root. Fails with an EXECUTOR error when that cannot be
 * done: the executor would otherwise write secrets to a disk.
 */
export async function executorRuntimeDir(options: RuntimeDirOptions): Promise<string> {
  const base = path.resolve(options.base ?? RUNTIME_BASE);
  await mkdir(base, { recursive: true, mode: 0o700 });
  if (!(await isMemoryBacked(base))) await mountTmpfs(base);
  if (!(await isMemoryBacked(base))) {
    throw new KilnError(ERROR_CODES.EXECUTOR, `${base} is not on a tmpfs, and none could be mounted there: container bundles, which hold secrets, must not be written to a disk`);
  }
  await checkPrivate(base);
  const rootDir = path.join(base, rootHash(options.root));
  await mkdir(rootDir, { recursive: true, mode: 0o700 });
  await checkPrivate(rootDir);
  // For whoever looks at /run/kiln: which root a directory belongs to. Written
  // each time (a few bytes), so a directory made by an older kiln gets one too.
  await writeFile(path.join(rootDir, 'root'), `${path.resolve(options.root)}\n`, { mode: 0o600 });
  const dir = path.join(rootDir, options.executor);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  return dir;
}

/** 16 hex digits of the SHA-256 of the root's absolute path: short enough for unix socket paths below it. */
function rootHash(root: string): string {
  return createHash('sha256').update(path.resolve(root)).digest('hex').slice(0, 16);
}

async function isMemoryBacked(dir: string): Promise<boolean> {
  return statfs(dir).then(
    (s) => MEMORY_FS_TYPES.has(s.type),
    () => false,
  );
}

/**
 * Mounts a tmpfs at `dir`, unless another kiln process did so meanwhile:
 * the check and the mount run under flock(1) on a lock file next to `dir`,
 * so two processes starting at once do not stack two mounts (the second
 * would hide what the first one wrote). No `noexec`: the containerd
 * executor binds an executable from here into its anchor container.
 */
async function mountTmpfs(dir: string): Promise<void> {
  const script = 'mountpoint -q "$1" || mount -t tmpfs -o "size=$2,mode=700,nosuid,nodev" kiln-run "$1"';
  const result = await run('flock', [`${dir}.lock`, 'sh', '-c', script, 'sh', dir, FALLBACK_TMPFS_SIZE]);
  if (result.code !== 0) throw new KilnError(ERROR_CODES.EXECUTOR, `cannot mount a tmpfs at ${dir} for container bundles: ${result.stderr.trim()}`);
}

/** Refuses a directory someone else could read or replace: it is about to hold secrets. */
async function checkPrivate(dir: string): Promise<void> {
  const info = await lstat(dir);
  if (!info.isDirectory() || info.uid !== process.getuid?.() || (info.mode & 0o077) !== 0) {
    throw new KilnError(
      ERROR_CODES.EXECUTOR,
      `${dir} is not a private directory of this user (it must be a directory owned by uid ${process.getuid?.()} with mode 0700); remove it and build again`,
    );
  }
}

/** Runs a command to completion; never rejects. */
function run(file: string, args: readonly string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(file, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.once('error', (err) => resolve({ code: null, stderr: err.message }));
    child.once('close', (code) => resolve({ code, stderr }));
  });
}
