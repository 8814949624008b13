/** The OCI config builder: exact output for sandboxed, host-network and insecure containers; the host's devices. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { KilnError } from '../../../src/errors.js';
import {
  canMount,
  OCI_OWN_MOUNTPOINTS,
  renderMount,
  ALL_CAPABILITIES,
  DEFAULT_CAPABILITIES,
  buildOciSpec,
  capabilitiesInMask,
  defaultHostname,
  hostsFile,
  ociJson,
  ociProcess,
  type OciSpecOptions,
} from '../../../src/executor/oci-spec.js';
import { hostDevices } from '../../../src/executor/process-facts.js';
import type { OciSeccomp } from '../../../src/executor/seccomp.js';
import type { ProcessMeta } from '../../../src/executor/types.js';

const META: ProcessMeta = {
  args: ['/bin/sh', '-c', 'make'],
  env: ['PATH=/bin'],
  cwd: '/work',
  user: { uid: 1000, gid: 100, additionalGids: [5, 20] },
  hostname: '',
  extraHosts: [{ host: 'db', ip: '10.0.0.2' }],
  ulimits: [{ name: 'nofile', soft: 1024, hard: 2048 }],
  cgroupParent: '',
  network: 'sandbox',
  security: 'sandbox',
};

function spec(meta: Partial<ProcessMeta> = {}, options: Partial<OciSpecOptions> = {}) {
  return buildOciSpec({
    id: 'kiln-0123456789ab',
    meta: { ...META, ...meta },
    rootPath: '/bundle/rootfs',
    mounts: [{ destination: '/src', type: 'bind', source: '/host/src', readonly: true }],
    hostsPath: '/bundle/hosts',
    ...options,
  });
}

const SYSTEM_MOUNTS = [
  { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
  { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
  { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'] },
  { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
  { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
  { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
  { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'] },
  { destination: '/etc/hosts', type: 'bind', source: '/bundle/hosts', options: ['rbind', 'ro'] },
];
const CALLER_MOUNT = { destination: '/src', type: 'bind', source: '/host/src', options: ['rbind', 'ro'] };

describe('buildOciSpec', () => {
  test('a sandboxed container: default capabilities, own namespaces, masked paths, default devices', () => {
    const caps: string[] = [...DEFAULT_CAPABILITIES];
    assert.deepEqual(spec(), {
      ociVersion: '1.0.2',
      process: {
        terminal: false,
        user: { uid: 1000, gid: 100, additionalGids: [5, 20] },
        args: ['/bin/sh', '-c', 'make'],
        env: ['PATH=/bin'],
        cwd: '/work',
        capabilities: { bounding: caps, effective: caps, permitted: caps },
        rlimits: [{ type: 'RLIMIT_NOFILE', hard: 2048n, soft: 1024n }],
        noNewPrivileges: true,
      },
      root: { path: '/bundle/rootfs', readonly: false },
      hostname: 'kiln-0123456',
      mounts: [...SYSTEM_MOUNTS, CALLER_MOUNT],
      linux: {
        namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network' }],
        cgroupsPath: '/kiln/kiln-0123456789ab',
        resources: {
          devices: [
            { allow: false, access: 'rwm' },
            { allow: true, type: 'c', major: 1, minor: 3, access: 'rwm' },
            { allow: true, type: 'c', major: 1, minor: 5, access: 'rwm' },
            { allow: true, type: 'c', major: 1, minor: 7, access: 'rwm' },
            { allow: true, type: 'c', major: 1, minor: 8, access: 'rwm' },
            { allow: true, type: 'c', major: 1, minor: 9, access: 'rwm' },
            { allow: true, type: 'c', major: 5, minor: 0, access: 'rwm' },
            { allow: true, type: 'c', major: 5, minor: 2, access: 'rwm' },
            { allow: true, type: 'c', major: 136, access: 'rwm' },
          ],
        },
        maskedPaths: [
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
        ],
        readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
      },
    });
    assert.equal(caps.length, 14);
    assert.equal(caps.includes('CAP_SYS_ADMIN'), false);
  });

  test('host network: no network namespace, and the host resolv.conf after /etc/hosts', () => {
    const s = spec({ network: 'host' }, { resolvConfPath: '/host/resolv.conf' });
    assert.deepEqual(
      s.linux.namespaces.map((n) => n.type),
      ['pid', 'ipc', 'uts', 'mount'],
    );
    assert.deepEqual(s.mounts, [
      ...SYSTEM_MOUNTS,
      { destination: '/etc/resolv.conf', type: 'bind', source: '/host/resolv.conf', options: ['rbind', 'ro'] },
      CALLER_MOUNT,
    ]);
    assert.equal(spec({ network: 'host' }).mounts.find((m) => m.destination === '/etc/resolv.conf')?.source, '/etc/resolv.conf');
    assert.equal(spec({ network: 'none' }).linux.namespaces.at(-1)?.type, 'network');
  });

  test('a sandbox with a namespace of its own joins it by path and binds its resolv.conf; host ignores it', () => {
    const network = { namespacePath: '/run/kiln/net/ns/1-2-3', resolvConfPath: '/run/kiln/net/resolv/1-2.conf' };
    const s = spec({ network: 'sandbox' }, { network });
    assert.deepEqual(s.linux.namespaces.at(-1), { type: 'network', path: '/run/kiln/net/ns/1-2-3' });
    assert.deepEqual(s.mounts, [
      ...SYSTEM_MOUNTS,
      { destination: '/etc/resolv.conf', type: 'bind', source: '/run/kiln/net/resolv/1-2.conf', options: ['rbind', 'ro'] },
      CALLER_MOUNT,
    ]);
    const host = spec({ network: 'host' }, { network });
    assert.ok(!host.linux.namespaces.some((n) => n.type === 'network'), 'host keeps the host namespace');
    assert.equal(host.mounts.find((m) => m.destination === '/etc/resolv.conf')?.source, '/etc/resolv.conf');
    assert.deepEqual(spec({ network: 'sandbox' }).linux.namespaces.at(-1), { type: 'network' }, 'no namespace given: a new one (loopback only)');
  });

  test('insecure: every capability, new privileges allowed, writable /sys, all devices, nothing masked', () => {
    const s = spec({ security: 'insecure' });
    const all: string[] = [...ALL_CAPABILITIES];
    assert.deepEqual(s.process.capabilities, { bounding: all, effective: all, permitted: all });
    assert.equal(all.length, 41);
    assert.equal(s.process.noNewPrivileges, false);
    assert.deepEqual(s.mounts.find((m) => m.destination === '/sys')?.options, ['nosuid', 'noexec', 'nodev', 'rw']);
    assert.deepEqual(s.linux.resources.devices, [{ allow: true, access: 'rwm' }]);
    assert.deepEqual(s.linux.maskedPaths, []);
    assert.deepEqual(s.linux.readonlyPaths, []);
    const limited = spec({ security: 'insecure' }, { allCapabilities: ['CAP_CHOWN', 'CAP_SYS_ADMIN'] });
    assert.deepEqual(limited.process.capabilities.bounding, ['CAP_CHOWN', 'CAP_SYS_ADMIN']);
  });

  test('the seccomp filter goes to sandboxed containers only, the host devices to insecure ones only', () => {
    const seccomp: OciSeccomp = { defaultAction: 'SCMP_ACT_ERRNO', architectures: ['SCMP_ARCH_X86_64'], syscalls: [{ names: ['read'], action: 'SCMP_ACT_ALLOW' }] };
    const devices = [{ path: '/dev/loop0', type: 'b' as const, major: 7, minor: 0, fileMode: 0o600, uid: 0, gid: 6 }];
    const sandboxed = spec({}, { seccomp, hostDevices: devices });
    assert.deepEqual(sandboxed.linux.seccomp, seccomp);
    assert.equal('devices' in sandboxed.linux, false);
    const insecure = spec({ security: 'insecure' }, { seccomp, hostDevices: devices });
    assert.equal('seccomp' in insecure.linux, false);
    assert.deepEqual(insecure.linux.devices, devices);
    assert.match(ociJson(sandboxed), /"seccomp":\{"defaultAction":"SCMP_ACT_ERRNO","architectures":\["SCMP_ARCH_X86_64"\],"syscalls":\[\{"names":\["read"\],"action":"SCMP_ACT_ALLOW"\}\]\}/);
  });

  test('hostname, cgroup parent, read-only root and annotations from the options', () => {
    const s = spec({ hostname: 'builder', cgroupParent: '/ci/jobs/' }, { rootReadonly: true, annotations: { a: 'b' } });
    assert.equal(s.hostname, 'builder');
    assert.equal(s.linux.cgroupsPath, '/ci/jobs/kiln-0123456789ab');
    assert.deepEqual(s.root, { path: '/bundle/rootfs', readonly: true });
    assert.deepEqual(s.annotations, { a: 'b' });
    assert.equal('annotations' in spec(), false);
  });
});

describe('mounts', () => {
  test('each kind is rendered into the spec\'s strings in one place', () => {
    assert.deepEqual(renderMount({ type: 'bind', source: '/a', readonly: true }), { type: 'bind', source: '/a', options: ['rbind', 'ro'] });
    assert.deepEqual(renderMount({ type: 'bind', source: '/a', readonly: false }), { type: 'bind', source: '/a', options: ['rbind', 'rw'] });
    assert.deepEqual(renderMount({ type: 'overlay', lower: ['/l2', '/l1'], upper: { dir: '/u', work: '/w' } }), {
      type: 'overlay',
      source: 'overlay',
      options: ['lowerdir=/l2:/l1', 'upperdir=/u', 'workdir=/w'],
    });
    assert.deepEqual(renderMount({ type: 'overlay', lower: ['/l2', '/l1'] }).options, ['lowerdir=/l2:/l1']);
    assert.deepEqual(renderMount({ type: 'tmpfs' }), { type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777'] });
    assert.deepEqual(renderMount({ type: 'tmpfs', size: 1024 }).options, ['nosuid', 'nodev', 'mode=1777', 'size=1024']);
  });

  test('a root mounts writable, read-only applied after; caller mounts in order', () => {
    const s = spec({}, { rootMounts: [{ type: 'bind', source: '/r', readonly: true }], rootReadonly: true });
    assert.deepEqual(s.mounts[0], { destination: '/', type: 'bind', source: '/r', options: ['rbind', 'rw'] });
    assert.equal(s.root.readonly, true);
    assert.deepEqual(s.mounts.at(-1), CALLER_MOUNT);
  });

  test('the runtime\'s own mount points cover every mount the spec makes in the root', () => {
    for (const m of spec({ network: 'host' }).mounts) {
      if (m === CALLER_MOUNT || m.destination === '/src') continue;
      assert.ok(OCI_OWN_MOUNTPOINTS.some((p) => m.destination === p || m.destination.startsWith(`${p}/`)), m.destination);
    }
  });

  test('an overlay longer than the runtime takes cannot be mounted as it is', () => {
    const overlay = { type: 'overlay', lower: ['/a'.repeat(10), '/b'] } as const;
    assert.equal(canMount({ ownMountpoints: [] }, overlay), true);
    assert.equal(canMount({ ownMountpoints: [], maxOverlayOptions: 100 }, overlay), true);
    assert.equal(canMount({ ownMountpoints: [], maxOverlayOptions: 20 }, overlay), false);
    assert.equal(canMount({ ownMountpoints: [], maxOverlayOptions: 1 }, { type: 'bind', source: '/x', readonly: false }), true);
  });
});

describe('ulimits', () => {
  test('map to RLIMIT_ types; -1 is the uint64 "unlimited", written exactly', () => {
    const p = ociProcess({
      ...META,
      ulimits: [
        { name: 'core', soft: -1, hard: -1 },
        { name: 'nproc', soft: 10, hard: -1 },
        { name: 'sigpending', soft: 0, hard: 0 },
      ],
    });
    assert.deepEqual(p.rlimits, [
      { type: 'RLIMIT_CORE', hard: 18446744073709551615n, soft: 18446744073709551615n },
      { type: 'RLIMIT_NPROC', hard: 18446744073709551615n, soft: 10n },
      { type: 'RLIMIT_SIGPENDING', hard: 0n, soft: 0n },
    ]);
    assert.match(ociJson(p), /"rlimits":\[\{"type":"RLIMIT_CORE","hard":18446744073709551615,"soft":18446744073709551615\},/);
  });

  test('an unknown name is refused, naming it', () => {
    assert.throws(
      () => ociProcess({ ...META, ulimits: [{ name: 'files', soft: 1, hard: 1 }] }),
      (err: unknown) => err instanceof KilnError && err.code === 'E_INVALID_DEFINITION' && err.message.startsWith('unknown ulimit "files"; expected one of core, cpu,'),
    );
  });
});

describe('helpers', () => {
  test('ociJson is JSON.stringify for everything but bigints', () => {
    const s = spec({ ulimits: [] });
    assert.equal(ociJson(s), JSON.stringify(s));
    assert.deepEqual(JSON.parse(ociJson(spec())), JSON.parse(JSON.stringify(spec(), (_, v: unknown) => (typeof v === 'bigint' ? Number(v) : v))));
  });

  test('the default hostname is a short, hostname-safe form of the id', () => {
    assert.equal(defaultHostname('kiln-0123456789ab'), 'kiln-0123456');
    assert.equal(defaultHostname('a_b.c+d'), 'a-b-c-d');
    assert.equal(defaultHostname('0123456789-_xyz'), '0123456789');
    assert.equal(defaultHostname('___'), 'kiln');
  });

  test('the hosts file has localhost, the hostname, then the extra hosts', () => {
    assert.equal(
      hostsFile('box', [
        { host: 'db', ip: '10.0.0.2' },
        { host: 'v6', ip: 'fd00::1' },
      ]),
      '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.0.1\tbox\n10.0.0.2\tdb\nfd00::1\tv6\n',
    );
  });

  test('capabilitiesInMask reads a CapBnd mask', () => {
    // A bounding set without CAP_SYS_RESOURCE (24), as in a restricted container.
    const caps = capabilitiesInMask(0x1fffeffffffn);
    assert.equal(caps.length, 40);
    assert.equal(caps.includes('CAP_SYS_RESOURCE'), false);
    assert.deepEqual(capabilitiesInMask(0b101n), ['CAP_CHOWN', 'CAP_DAC_READ_SEARCH']);
  });
});

describe('hostDevices', () => {
  test('every device node under /dev with its numbers and mode, but the console, ptmx and pts', async () => {
    const devices = await hostDevices();
    assert.deepEqual(
      devices.find((d) => d.path === '/dev/null'),
      { path: '/dev/null', type: 'c', major: 1, minor: 3, fileMode: 0o666, uid: 0, gid: 0 },
    );
    assert.equal(devices.find((d) => d.path === '/dev/zero')?.minor, 5);
    const paths = devices.map((d) => d.path);
    assert.equal(paths.includes('/dev/console') || paths.includes('/dev/ptmx'), false);
    assert.deepEqual(paths.filter((p) => p.startsWith('/dev/pts/') || p.startsWith('/dev/shm/')), []);
  });
});
