/**
 * Facts about processes and their host that every executor needs alike:
 * which capabilities kiln may hand out, the seccomp filter of sandboxed
 * containers, the host's devices, how an exit code reads, and how a
 * runtime's own failure is reported.
 */
import { type Dirent, readFileSync } from 'node:fs';
import { lstat, readdir, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { assertNever, ERROR_CODES, KilnError } from '../errors.js';
import { explainNoSpace } from '../fs/no-space.js';
import type { Mount } from '../snapshot/types.js';
import { ALL_CAPABILITIES, capabilitiesInMask, DEFAULT_CAPABILITIES, frozen, type OciDevice, type OciSpecOptions } from './oci-spec.js';
import { kernelLacksArches, ociSeccomp, parseSeccompProfile, type OciSeccomp } from './seccomp.js';
import type { ContainerMount, ExitStatus, ProcessMeta, SeccompStatus } from './types.js';

/**
 * The capabilities this process may hand out (its bounding set). `insecure`
 * asks for exactly these: asking for one the runtime lacks (kiln itself in a
 * restricted container) would make every privileged container fail.
 */
export async function boundingCapabilities(): Promise<string[]> {
  const status = await readFile('/proc/self/status', 'utf8').catch(() => '');
  const hex = /^CapBnd:\s*([0-9a-fA-F]+)$/m.exec(status)?.[1];
  return hex === undefined ? [...ALL_CAPABILITIES] : capabilitiesInMask(BigInt(`0x${hex}`));
}

/** The seccomp profile kiln applies to sandboxed containers: the one podman and buildah use (Debian: golang-github-containers-common). */
export const SECCOMP_PROFILE = '/usr/share/containers/seccomp.json';

/**
 * What sandboxed containers run under: the filter, if any, and what `kiln
 * workers` says of it. `filter` is worked out when first read (see
 * readSandboxSeccomp): read it when a container is made, not before.
 */
export interface SandboxSeccomp {
  readonly filter: OciSeccomp | undefined;
  readonly status: SeccompStatus;
}

const seccompByFile = new Map<string, Promise<SandboxSeccomp>>();

/**
 * The seccomp filter of a sandboxed container (default capabilities) on
 * this host, from the profile `file`. The file is read once per process.
 * A missing file means no filter, with the reason in the status; a
 * malformed one rejects (an EXECUTOR error naming it).
 */
export function sandboxSeccomp(file = SECCOMP_PROFILE): Promise<SandboxSeccomp> {
  let loaded = seccompByFile.get(file);
  if (loaded === undefined) {
    loaded = readSandboxSeccomp(file);
    seccompByFile.set(file, loaded);
  }
  return loaded;
}

async function readSandboxSeccomp(file: string): Promise<SandboxSeccomp> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    return { filter: undefined, status: { enabled: false, reason: `no profile at ${file}` } };
  }
  // Checked now, so a malformed profile fails the executor's start; turned
  // into the filter when a container first needs it: a build whose steps
  // all come from the cache never does, and the kernel's build options
  // (/proc/config.gz, gunzipped) and the conversion cost it ~2 ms. Frozen:
  // every sandboxed container's spec shares it, and its JSON is written once (ociJson).
  const profile = parseSeccompProfile(text, file);
  let filter: OciSeccomp | undefined;
  return {
    get filter(): OciSeccomp {
      filter ??= frozen(ociSeccomp(profile, { capabilities: DEFAULT_CAPABILITIES, arch: process.arch, kernel: os.release(), kernelLacks: kernelLacksArches(kernelConfig()) }));
      return filter;
    },
    status: { enabled: true, profile: file },
  };
}

/** Where a kernel built with CONFIG_IKCONFIG_PROC shows its build options (gzipped). */
const KERNEL_CONFIG = '/proc/config.gz';

/**
 * The running kernel's build options, or undefined where it does not show
 * them. Read synchronously: a file in procfs, read once per process, by the
 * getter above.
 */
function kernelConfig(): string | undefined {
  try {
    return gunzipSync(readFileSync(KERNEL_CONFIG)).toString('utf8');
  } catch {
    return undefined;
  }
}

/**
 * The spec options a container of `meta` takes from the host, the same for
 * every executor: what `insecure` grants (`capabilities`, see
 * boundingCapabilities), the sandbox's seccomp filter (applied to sandboxed
 * containers only), and the host's devices for an insecure one.
 */
export async function hostSpecOptions(
  capabilities: readonly string[],
  seccomp: OciSeccomp | undefined,
  meta: ProcessMeta,
): Promise<Pick<OciSpecOptions, 'allCapabilities' | 'seccomp' | 'hostDevices'>> {
  return {
    allCapabilities: capabilities,
    ...(seccomp === undefined ? {} : { seccomp }),
    ...(meta.security === 'insecure' ? { hostDevices: await hostDevices() } : {}),
  };
}

/**
 * Entries of /dev that are not devices to hand over: the container gets its
 * own pts, shm and mqueue mounts, and its console and ptmx come from runc.
 */
const NOT_HOST_DEVICES = new Set(['pts', 'shm', 'mqueue', 'console', 'ptmx', 'fd']);

/**
 * The host's device nodes (under /dev), for `security:
 * insecure` containers, which get them all (as a privileged Docker or
 * BuildKit container does). Read at each use: devices come and go.
 */
export async function hostDevices(): Promise<OciDevice[]> {
  const dir = '/dev';
  const devices: OciDevice[] = [];
  const walk = async (at: string): Promise<void> => {
    const entries: Dirent[] = await readdir(at, { withFileTypes: true }).catch(() => []);
    for (const entry of entries) {
      const file = path.join(at, entry.name);
      if (at === dir && NOT_HOST_DEVICES.has(entry.name)) continue;
      if (entry.isDirectory()) await walk(file);
      if (!entry.isCharacterDevice() && !entry.isBlockDevice()) continue;
      // Gone since the readdir: nothing to hand over.
      const st = await lstat(file, { bigint: true }).catch(() => undefined);
      if (st === undefined) continue;
      // Linux's dev_t layout (glibc's makedev): 12 bits of major and 20 of minor, split.
      const major = Number(((st.rdev >> 8n) & 0xfffn) | ((st.rdev >> 32n) & ~0xfffn));
      const minor = Number((st.rdev & 0xffn) | ((st.rdev >> 12n) & ~0xffn));
      devices.push({
        path: file,
        type: entry.isCharacterDevice() ? 'c' : 'b',
        major,
        minor,
        fileMode: Number(st.mode & 0o7777n),
        uid: Number(st.uid),
        gid: Number(st.gid),
      });
    }
  };
  await walk(dir);
  return devices;
}

/**
 * Runtimes report a process killed by signal N as 128+N (the shell
 * convention): a code above 128 is reported as that signal, even though a
 * process could exit with it on its own.
 */
export function exitStatus(code: number): ExitStatus {
  const signal = code > 128 ? Object.entries(os.constants.signals).find(([, n]) => n === code - 128)?.[0] : undefined;
  return signal === undefined ? { exitCode: code } : { exitCode: code, signal };
}

/**
 * Resolves once `stream` has passed on everything written to it so far: a
 * run is over only when its output has reached the caller's stream, not when
 * it sits in that stream's buffer (a slow reader must not lose the tail).
 * An empty write's callback comes after every write before it.
 */
export function flushed(stream: Writable): Promise<void> {
  if (stream.writableLength === 0) return Promise.resolve();
  return new Promise((resolve) => stream.write(Buffer.alloc(0), () => resolve()));
}

/**
 * The error for a runtime that could not run a container (runc's own
 * message, containerd's answer): EXECUTOR, never the process's exit code,
 * since the process did not run. A full disk is named among the host paths
 * the container uses (`hostPaths`), as the runtime's message names none.
 */
export function runtimeError(what: string, message: string, options: { readonly hostPaths?: readonly string[]; readonly cause?: unknown } = {}): KilnError {
  return new KilnError(ERROR_CODES.EXECUTOR, explainNoSpace(`${what}: ${message}`, options.hostPaths), options.cause === undefined ? {} : { cause: options.cause });
}

/** The host paths a container's mounts use (sources, overlay dirs), where a full disk would be. */
export function hostPaths(root: readonly Mount[], mounts: readonly ContainerMount[]): string[] {
  return [...root, ...mounts].flatMap((m): string[] => {
    switch (m.type) {
      case 'bind':
        return [m.source];
      case 'overlay':
        return [...m.lower, ...(m.upper === undefined ? [] : [m.upper.dir, m.upper.work])];
      case 'tmpfs':
        return [];
      default:
        return assertNever(m, 'mount type');
    }
  });
}
