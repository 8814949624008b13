/**
 * "No space left on device" in words a user can act on: which filesystem is
 * full. The kernel's ENOSPC names no filesystem, and the layer that hits it
 * (a mkdir in a snapshot, runc mounting an overlay, a process writing) is
 * rarely the one whose path the user knows; so every layer that reports an
 * ENOSPC names the full filesystem the same way, through this module.
 */
import { readFileSync, realpathSync, statfsSync, statSync } from 'node:fs';
import path from 'node:path';
import { formatBytes } from '../bytes.js';

/** Whether `err` is an ENOSPC, by its code or (for a runtime's text) by its message. */
export function isNoSpace(err: unknown): boolean {
  if (typeof err === 'string') return /no space left on device|ENOSPC/i.test(err);
  if (!(err instanceof Error)) return false;
  return (err as NodeJS.ErrnoException).code === 'ENOSPC' || isNoSpace(err.message);
}

/** Absolute paths mentioned in a message (`mkdir '/a/b'`, `upperdir=/a/c,...`), for `fullFilesystem`. */
export function pathsIn(text: string): string[] {
  return [...text.matchAll(/(?:^|[\s'"=:(])(\/[^\s'",:;()]*)/g)].map((m) => m[1] ?? '').filter((p) => p.length > 1);
}

/** One filesystem that a path lives on. */
interface Filesystem {
  readonly mountPoint: string;
  readonly type: string;
  readonly source: string;
  readonly freeBytes: number;
  readonly totalBytes: number;
  /** Free inodes; undefined when the filesystem does not count them (tmpfs with nr_inodes=0, btrfs). */
  readonly freeInodes: number | undefined;
  /** The first path given that lives on it. */
  readonly holding: string;
}

/**
 * The sentence naming the fullest filesystem among those holding `paths`
 * (each path, or its nearest existing parent), e.g. `the filesystem at
 * /mnt/build (ext4 on /dev/loop0, holding /mnt/build/kiln) is full: 0 B of
 * 14 MiB free`; undefined when none of the paths can be looked at. Sync:
 * it runs once, on a failure path, and error constructors are sync.
 */
export function fullFilesystem(paths: readonly string[]): string | undefined {
  const seen = new Map<number, Filesystem>();
  for (const p of paths) {
    const fs = filesystemOf(p);
    // A filesystem with no blocks (proc, sysfs: a path in the message that is
    // the container's, not the host's) is never the one that is full.
    if (fs !== undefined && fs.info.totalBytes > 0 && !seen.has(fs.dev)) seen.set(fs.dev, fs.info);
  }
  // The one with the least room left, by share: a full disk next to a roomy tmpfs.
  const fullest = [...seen.values()].sort((a, b) => room(a) - room(b))[0];
  if (fullest === undefined) return undefined;
  const holding = fullest.holding === fullest.mountPoint ? '' : `, holding ${fullest.holding}`;
  const what = fullest.freeInodes === 0 && fullest.freeBytes > 0 ? 'has no inodes left' : `is full: ${formatBytes(fullest.freeBytes)} of ${formatBytes(fullest.totalBytes)} free`;
  return `the filesystem at ${fullest.mountPoint} (${fullest.type} on ${fullest.source}${holding}) ${what}`;
}

/**
 * `message` with the full filesystem among `paths` (and the paths the
 * message names) after it, when it is an ENOSPC; else `message` unchanged.
 */
export function explainNoSpace(message: string, paths: readonly string[] = []): string {
  if (!isNoSpace(message)) return message;
  const full = fullFilesystem([...pathsIn(message), ...paths]);
  return full === undefined ? message : `${message} (${full})`;
}

function room(fs: Filesystem): number {
  if (fs.freeInodes === 0) return 0;
  return fs.freeBytes / fs.totalBytes;
}

function filesystemOf(p: string): { dev: number; info: Filesystem } | undefined {
  let dir = path.resolve(p);
  for (;;) {
    try {
      const real = realpathSync(dir);
      const st = statfsSync(real);
      const mount = mountOf(real);
      return {
        dev: statSync(real).dev,
        info: {
          mountPoint: mount?.mountPoint ?? real,
          type: mount?.type ?? 'unknown type',
          source: mount?.source ?? 'unknown device',
          // What df calls available: what is left once the blocks reserved for root are
          // set aside, which ext4 does not give out to root either once it is that low.
          freeBytes: st.bavail * st.bsize,
          totalBytes: st.blocks * st.bsize,
          freeInodes: st.files === 0 ? undefined : st.ffree,
          holding: real,
        },
      };
    } catch {
      const parent = path.dirname(dir);
      if (parent === dir) return undefined;
      dir = parent;
    }
  }
}

/** The mount (from /proc/self/mountinfo) that `real`, a resolved path, lives on: the longest mount point above it. */
function mountOf(real: string): { mountPoint: string; type: string; source: string } | undefined {
  let best: { mountPoint: string; type: string; source: string } | undefined;
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [before, after] = line.split(' - ');
    const mountPoint = unescape(before?.split(' ')[4] ?? '');
    const [type = '', source = ''] = after?.split(' ') ?? [];
    if (mountPoint === '' || !(real === mountPoint || real.startsWith(mountPoint === '/' ? '/' : `${mountPoint}/`))) continue;
    // Later lines are later mounts: one stacked on the same point hides the earlier.
    if (best === undefined || mountPoint.length >= best.mountPoint.length) best = { mountPoint, type, source: unescape(source) };
  }
  return best;
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
function unescape(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}
