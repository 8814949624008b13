/**
 * The OCI runtime spec (config.json) of a kiln container: a typed subset of
 * the spec and a pure builder, shared by every executor that hands bundles to
 * an OCI runtime. No I/O here: what depends on the machine (the hosts file's
 * path, the capabilities this process may grant, the seccomp filter, the
 * host's devices) comes in as options.
 *
 * `security: sandbox` is Docker's default container: default capabilities,
 * no new privileges, masked and read-only /proc paths, a read-only /sys,
 * a few harmless devices, and the seccomp filter. `security: insecure` is a
 * privileged container, as BuildKit's insecure mode makes it: every
 * capability, no seccomp, nothing masked, a writable /sys, and every host
 * device, made as nodes in the container's own /dev (not a bind of the
 * host's /dev, which would also share the host's pts and shm).
 */
import { assertNever, ERROR_CODES, KilnError } from '../errors.js';
import { ULIMIT_NAMES } from '../llb/types.js';
import type { OciSeccomp } from './seccomp.js';
import type { Mount } from '../snapshot/types.js';
import type { ContainerMount, MountSupport, NetworkNamespaceRef, ProcessMeta } from './types.js';

/** The runtime-spec version the generated configs declare. */
export const OCI_VERSION = '1.0.2';

/** `process.user`. */
export interface OciUser {
  readonly uid: number;
  readonly gid: number;
  readonly additionalGids: readonly number[];
}

/**
 * `process.rlimits[]`. The limits are uint64 in the spec and "unlimited" is
 * 2^64-1, which a JS number cannot hold exactly, hence bigint (written by
 * `ociJson`).
 */
export interface OciRlimit {
  readonly type: string;
  readonly hard: bigint;
  readonly soft: bigint;
}

/** `process.capabilities`; inheritable and ambient stay empty, so exec'd programs gain nothing. */
export interface OciCapabilities {
  readonly bounding: readonly string[];
  readonly effective: readonly string[];
  readonly permitted: readonly string[];
}

/** `process`: also the content of a `runc exec --process` file. */
export interface OciProcess {
  readonly terminal: boolean;
  /** The pseudo-terminal's first size, with `terminal`. */
  readonly consoleSize?: { readonly height: number; readonly width: number };
  readonly user: OciUser;
  readonly args: readonly string[];
  readonly env: readonly string[];
  readonly cwd: string;
  readonly capabilities: OciCapabilities;
  readonly rlimits: readonly OciRlimit[];
  readonly noNewPrivileges: boolean;
}

/** `mounts[]`. */
export interface OciMount {
  readonly destination: string;
  readonly type: string;
  readonly source: string;
  readonly options: readonly string[];
}

/** `linux.namespaces[]`: without a path, a new namespace of that type. */
export interface OciNamespace {
  readonly type: 'pid' | 'ipc' | 'uts' | 'mount' | 'network';
  /** An existing namespace to join instead of making one. */
  readonly path?: string;
}

/** `linux.resources.devices[]`: a device cgroup rule; a missing major/minor matches all. */
export interface OciDeviceRule {
  readonly allow: boolean;
  readonly type?: 'a' | 'b' | 'c';
  readonly major?: number;
  readonly minor?: number;
  readonly access: string;
}

/** `linux.devices[]`: a device node the runtime makes in the container's /dev. */
export interface OciDevice {
  /** Inside the container. */
  readonly path: string;
  readonly type: 'c' | 'b';
  readonly major: number;
  readonly minor: number;
  /** Permission bits. */
  readonly fileMode: number;
  readonly uid: number;
  readonly gid: number;
}

/** `linux`. */
export interface OciLinux {
  readonly namespaces: readonly OciNamespace[];
  readonly cgroupsPath: string;
  readonly resources: { readonly devices: readonly OciDeviceRule[] };
  /** Only insecure containers get device nodes besides the runtime's defaults (null, zero, tty, ...). */
  readonly devices?: readonly OciDevice[];
  readonly maskedPaths: readonly string[];
  readonly readonlyPaths: readonly string[];
  /** Absent: no filter (insecure containers, or a host without a profile). */
  readonly seccomp?: OciSeccomp;
}

/** A config.json. */
export interface OciSpec {
  readonly ociVersion: string;
  readonly process: OciProcess;
  readonly root: { readonly path: string; readonly readonly: boolean };
  readonly hostname: string;
  readonly mounts: readonly OciMount[];
  readonly linux: OciLinux;
  readonly annotations?: Readonly<Record<string, string>>;
}

/** What a container gets besides its process meta. */
export interface OciSpecOptions {
  /** The container id: names its cgroup and, by default, its hostname. */
  readonly id: string;
  readonly meta: ProcessMeta;
  /** The root filesystem's directory on the host (relative: to the bundle). */
  readonly rootPath: string;
  /**
   * Mounted at the root by the runtime before anything else (runc mounts
   * them inside the container's mount namespace, so they vanish with it);
   * none: `rootPath` is the root as it is.
   */
  readonly rootMounts?: readonly Mount[];
  /** Default false. */
  readonly rootReadonly?: boolean;
  /** The caller's mounts, mounted last, in order. */
  readonly mounts: readonly ContainerMount[];
  /** A file with `hostsFile()`'s content, bound at /etc/hosts. */
  readonly hostsPath: string;
  /** Bound at /etc/resolv.conf when the network is the host's; default /etc/resolv.conf. */
  readonly resolvConfPath?: string;
  /** A sandboxed container's network namespace to join (and its resolv.conf); without it, a new one with loopback only. */
  readonly network?: NetworkNamespaceRef;
  /**
   * What `security: insecure` grants. Defaults to ALL_CAPABILITIES; a runtime
   * that lacks some (e.g. itself in a restricted container) passes the ones
   * it holds, since asking for more makes the container fail to start.
   */
  readonly allCapabilities?: readonly string[];
  /** The seccomp filter of a sandboxed container (see `sandboxSeccomp()`); insecure ones get none. */
  readonly seccomp?: OciSeccomp;
  /** The host's devices (see `hostDevices()`), made in an insecure container's /dev; sandboxed ones get none. */
  readonly hostDevices?: readonly OciDevice[];
  readonly annotations?: Readonly<Record<string, string>>;
}

/** The capabilities of a default (sandbox) container, as Docker and containerd grant them. */
export const DEFAULT_CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
] as const;

/** Every Linux capability, indexed by its number (up to CAP_CHECKPOINT_RESTORE, Linux 5.9). */
export const ALL_CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_DAC_READ_SEARCH',
  'CAP_FOWNER',
  'CAP_FSETID',
  'CAP_KILL',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETPCAP',
  'CAP_LINUX_IMMUTABLE',
  'CAP_NET_BIND_SERVICE',
  'CAP_NET_BROADCAST',
  'CAP_NET_ADMIN',
  'CAP_NET_RAW',
  'CAP_IPC_LOCK',
  'CAP_IPC_OWNER',
  'CAP_SYS_MODULE',
  'CAP_SYS_RAWIO',
  'CAP_SYS_CHROOT',
  'CAP_SYS_PTRACE',
  'CAP_SYS_PACCT',
  'CAP_SYS_ADMIN',
  'CAP_SYS_BOOT',
  'CAP_SYS_NICE',
  'CAP_SYS_RESOURCE',
  'CAP_SYS_TIME',
  'CAP_SYS_TTY_CONFIG',
  'CAP_MKNOD',
  'CAP_LEASE',
  'CAP_AUDIT_WRITE',
  'CAP_AUDIT_CONTROL',
  'CAP_SETFCAP',
  'CAP_MAC_OVERRIDE',
  'CAP_MAC_ADMIN',
  'CAP_SYSLOG',
  'CAP_WAKE_ALARM',
  'CAP_BLOCK_SUSPEND',
  'CAP_AUDIT_READ',
  'CAP_PERFMON',
  'CAP_BPF',
  'CAP_CHECKPOINT_RESTORE',
] as const;

/** The names of the capabilities set in `mask` (a /proc/PID/status `CapBnd` value); unknown bits are dropped. */
export function capabilitiesInMask(mask: bigint): string[] {
  return ALL_CAPABILITIES.filter((_, bit) => ((mask >> BigInt(bit)) & 1n) === 1n);
}

const ULIMITS: ReadonlySet<string> = new Set(ULIMIT_NAMES);

/** RLIM_INFINITY as the spec's uint64. */
const UNLIMITED = 2n ** 64n - 1n;

/** The OCI process for `meta`: the container's first process, or one exec'd into it. */
export function ociProcess(meta: ProcessMeta, allCapabilities: readonly string[] = ALL_CAPABILITIES): OciProcess {
  const insecure = meta.security === 'insecure';
  const caps = insecure ? [...allCapabilities] : [...DEFAULT_CAPABILITIES];
  return {
    terminal: false,
    user: { uid: meta.user.uid, gid: meta.user.gid, additionalGids: [...meta.user.additionalGids] },
    args: [...meta.args],
    env: [...meta.env],
    cwd: meta.cwd,
    capabilities: { bounding: caps, effective: caps, permitted: caps },
    rlimits: meta.ulimits.map((u) => {
      if (!ULIMITS.has(u.name)) {
        throw new KilnError(
          ERROR_CODES.INVALID_DEFINITION,
          `unknown ulimit "${u.name}"; expected one of ${ULIMIT_NAMES.join(', ')}`,
        );
      }
      // -1 is the definition's "unlimited" (the loader rejects other negatives).
      const limit = (n: number): bigint => (n < 0 ? UNLIMITED : BigInt(n));
      return { type: `RLIMIT_${u.name.toUpperCase()}`, hard: limit(u.hard), soft: limit(u.soft) };
    }),
    noNewPrivileges: !insecure,
  };
}

/** A terminal's size; 80x24 when it does not say. */
export function terminalSize(terminal: { readonly columns?: number; readonly rows?: number }): { readonly columns: number; readonly rows: number } {
  return { columns: terminal.columns ?? 80, rows: terminal.rows ?? 24 };
}

/** `spec` with its process on a pseudo-terminal the size of `terminal` (the one it stands for). */
export function onTerminal(spec: OciSpec, terminal: { readonly columns?: number; readonly rows?: number }): OciSpec {
  const { columns, rows } = terminalSize(terminal);
  return { ...spec, process: { ...spec.process, terminal: true, consoleSize: { height: rows, width: columns } } };
}

/** Paths of /proc and /sys a sandboxed container must not read (masked) or write (read-only). */
const MASKED_PATHS = frozen([
  '/proc/acpi',
  '/proc/asound',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/proc/scsi',
  '/sys/firmware',
  '/sys/devices/virtual/powercap',
]);
const READONLY_PATHS = frozen(['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger']);

/** The character devices (major, minor; undefined = any) a sandboxed container may use. */
const DEFAULT_DEVICES: readonly (readonly [number, number | undefined])[] = [
  [1, 3], // null
  [1, 5], // zero
  [1, 7], // full
  [1, 8], // random
  [1, 9], // urandom
  [5, 0], // tty
  [5, 2], // ptmx
  [136, undefined], // pts/*
];

function deviceRules(insecure: boolean): OciDeviceRule[] {
  if (insecure) return [{ allow: true, access: 'rwm' }];
  return [
    { allow: false, access: 'rwm' },
    ...DEFAULT_DEVICES.map(([major, minor]): OciDeviceRule => ({
      allow: true,
      type: 'c',
      major,
      ...(minor === undefined ? {} : { minor }),
      access: 'rwm',
    })),
  ];
}

/** The hostname of container `id` when the caller gave none: the id's first 12 hostname-safe characters. */
export function defaultHostname(id: string): string {
  return id.replace(/[^A-Za-z0-9-]/g, '-').replace(/^-+/, '').slice(0, 12).replace(/-+$/, '') || 'kiln';
}

/** The content of the container's /etc/hosts. */
export function hostsFile(hostname: string, extraHosts: ProcessMeta['extraHosts']): string {
  const lines = ['127.0.0.1\tlocalhost', '::1\tlocalhost ip6-localhost ip6-loopback', `127.0.0.1\t${hostname}`];
  for (const h of extraHosts) lines.push(`${h.ip}\t${h.host}`);
  return `${lines.join('\n')}\n`;
}

/** A process with nothing but `args` and `env` set: root, in `/`, sandboxed, runtime defaults for the rest. */
export function plainProcessMeta(args: readonly string[], env: readonly string[] = []): ProcessMeta {
  return {
    args,
    env,
    cwd: '/',
    user: { uid: 0, gid: 0, additionalGids: [] },
    hostname: '',
    extraHosts: [],
    ulimits: [],
    cgroupParent: '',
    network: 'sandbox',
    security: 'sandbox',
  };
}

/**
 * A mount as an OCI spec (and a containerd shim, whose rootfs mounts have
 * the same three fields) takes it: the one place a Mount becomes strings on
 * its way to a runtime.
 */
export function renderMount(mount: Mount): { type: string; source: string; options: string[] } {
  switch (mount.type) {
    case 'bind':
      return { type: 'bind', source: mount.source, options: ['rbind', mount.readonly ? 'ro' : 'rw'] };
    case 'overlay': {
      const options = [`lowerdir=${mount.lower.join(':')}`];
      if (mount.upper !== undefined) options.push(`upperdir=${mount.upper.dir}`, `workdir=${mount.upper.work}`);
      return { type: 'overlay', source: 'overlay', options };
    }
    case 'tmpfs':
      return { type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777', ...(mount.size === undefined ? [] : [`size=${mount.size}`])] };
    default:
      return assertNever(mount, 'mount type');
  }
}

/** `mount` at `destination` in the spec's terms. */
export function ociMount(destination: string, mount: Mount): OciMount {
  return { destination, ...renderMount(mount) };
}

/**
 * Where every container whose spec `buildOciSpec` makes gets a mount of the
 * runtime's own in its root (the mounts under /dev and /sys land inside
 * those, not in the root). /etc/resolv.conf only with the host's network.
 */
export const OCI_OWN_MOUNTPOINTS: readonly string[] = ['/proc', '/dev', '/sys', '/etc/hosts', '/etc/resolv.conf'];

/** Those of {@link OCI_OWN_MOUNTPOINTS} whose stubs stay in a result, as in BuildKit's: the system filesystems'. */
export const OCI_SYSTEM_MOUNTPOINTS: readonly string[] = ['/proc', '/dev', '/sys'];

/** Whether a runtime with `support` can mount `mount` as it is. */
export function canMount(support: MountSupport, mount: Mount): boolean {
  if (mount.type !== 'overlay' || support.maxOverlayOptions === undefined) return true;
  return renderMount(mount).options.join(',').length <= support.maxOverlayOptions;
}

/** The config.json of a container. */
export function buildOciSpec(options: OciSpecOptions): OciSpec {
  const { id, meta } = options;
  const insecure = meta.security === 'insecure';
  const hostNetwork = meta.network === 'host';
  const mounts: OciMount[] = [
    // The runtime mounts the root writable, to make its mount points, and applies read-only after (root.readonly).
    ...(options.rootMounts ?? []).map((m) => ociMount('/', m.type === 'bind' ? { ...m, readonly: false } : m)),
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    {
      destination: '/dev/pts',
      type: 'devpts',
      source: 'devpts',
      options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
    },
    { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', insecure ? 'rw' : 'ro'] },
    { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'] },
    { destination: '/etc/hosts', type: 'bind', source: options.hostsPath, options: ['rbind', 'ro'] },
  ];
  const joined = hostNetwork ? undefined : options.network;
  if (hostNetwork || joined !== undefined) {
    const resolvConf = joined?.resolvConfPath ?? options.resolvConfPath ?? '/etc/resolv.conf';
    mounts.push({ destination: '/etc/resolv.conf', type: 'bind', source: resolvConf, options: ['rbind', 'ro'] });
  }
  for (const m of options.mounts) mounts.push(ociMount(m.destination, m));

  const namespaces: OciNamespace[] = [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }];
  // A namespace made for the container (sandbox with a network provider) is
  // joined; otherwise a new one has only loopback, which runc brings up.
  if (joined !== undefined) namespaces.push({ type: 'network', path: joined.namespacePath });
  else if (!hostNetwork) namespaces.push({ type: 'network' });

  const cgroupParent = (meta.cgroupParent || '/kiln').replace(/\/+$/, '');
  return {
    ociVersion: OCI_VERSION,
    process: ociProcess(meta, options.allCapabilities),
    root: { path: options.rootPath, readonly: options.rootReadonly ?? false },
    hostname: meta.hostname || defaultHostname(id),
    mounts,
    linux: {
      namespaces,
      cgroupsPath: `${cgroupParent}/${id}`,
      resources: { devices: deviceRules(insecure) },
      ...(insecure && options.hostDevices !== undefined ? { devices: options.hostDevices } : {}),
      maskedPaths: insecure ? [] : MASKED_PATHS,
      readonlyPaths: insecure ? [] : READONLY_PATHS,
      ...(!insecure && options.seccomp !== undefined ? { seccomp: options.seccomp } : {}),
    },
    ...(options.annotations === undefined ? {} : { annotations: options.annotations }),
  };
}

/** `spec` (or a process) as JSON, with uint64 limits written exactly. */
export function ociJson(spec: OciSpec | OciProcess): string {
  return toJson(spec);
}

/**
 * The JSON of frozen objects, written once: every sandboxed container's
 * spec holds the same seccomp filter (most of a spec's ~10 kB), and writing
 * it again for each container cost a wide build's start a good part of a
 * millisecond per container, when the main thread is what the other
 * containers wait for. Only objects frozen all the way down (`frozen()`)
 * are frozen here, so a kept text never goes stale.
 */
const frozenJson = new WeakMap<object, string>();

/** `value`, frozen with everything it holds, so that its OCI JSON is written once (see frozenJson). */
export function frozen<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    for (const field of Object.values(value)) frozen(field);
    Object.freeze(value);
  }
  return value;
}

// JSON.stringify cannot write bigints, and a number cannot hold 2^64-1.
function toJson(value: unknown): string {
  if (typeof value !== 'object' || value === null) return typeof value === 'bigint' ? value.toString() : JSON.stringify(value);
  const kept = frozenJson.get(value);
  if (kept !== undefined) return kept;
  let text: string;
  if (Array.isArray(value)) text = `[${value.map(toJson).join(',')}]`;
  else {
    const fields = Object.entries(value).filter(([, v]) => v !== undefined);
    text = `{${fields.map(([k, v]) => `${JSON.stringify(k)}:${toJson(v)}`).join(',')}}`;
  }
  if (Object.isFrozen(value)) frozenJson.set(value, text);
  return text;
}
