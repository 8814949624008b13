/**
 * A private containerd for tests: its own root, state and socket in a temp
 * dir, only the plugins running containers needs (no CRI, no exotic
 * snapshotters), started in the background and stopped (and its dirs
 * removed) by `close()`. Only a unix socket: nothing listens on the network.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Plugins a test daemon does not need; each costs startup time or logs errors on a machine without it. */
const DISABLED_PLUGINS = [
  'io.containerd.grpc.v1.cri',
  'io.containerd.snapshotter.v1.btrfs',
  'io.containerd.snapshotter.v1.zfs',
  'io.containerd.snapshotter.v1.devmapper',
  'io.containerd.snapshotter.v1.aufs',
  'io.containerd.tracing.processor.v1.otlp',
  'io.containerd.internal.v1.tracing',
];

/** A running private containerd. */
export interface TestContainerd {
  /** The socket path, usable as the executor's address. */
  readonly address: string;
  /** The temp dir holding the daemon's config, root, state and log. */
  readonly dir: string;
  /** Runs `ctr` against this daemon in `namespace` (default kiln) and returns its stdout. */
  ctr(args: readonly string[], namespace?: string): Promise<string>;
  /** Stops the daemon (SIGTERM) and starts it again over the same root and state. */
  restart(): Promise<void>;
  /** Stops the daemon (SIGTERM); its shims go on. */
  stop(): Promise<void>;
  /** Starts a stopped daemon again over the same root and state. */
  start(): Promise<void>;
  /** Kills what tasks are left, stops the daemon and removes its dir. */
  close(): Promise<void>;
}

/** Starts a private containerd and waits until it answers. Needs root and containerd, ctr and containerd-shim-runc-v2 in PATH. */
export async function startContainerd(): Promise<TestContainerd> {
  // A short name: a unix socket path may not be longer than 107 bytes.
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kiln-ctd-'));
  const address = path.join(dir, 'c.sock');
  const config = path.join(dir, 'config.toml');
  await writeFile(
    config,
    [
      'version = 2',
      `root = ${JSON.stringify(path.join(dir, 'root'))}`,
      `state = ${JSON.stringify(path.join(dir, 'state'))}`,
      `disabled_plugins = ${JSON.stringify(DISABLED_PLUGINS)}`,
      '[grpc]',
      `  address = ${JSON.stringify(address)}`,
      '[ttrpc]',
      `  address = ${JSON.stringify(`${address}.ttrpc`)}`,
      '',
    ].join('\n'),
  );
  const ctr = async (args: readonly string[], namespace = 'kiln'): Promise<string> =>
    (await run('ctr', ['--address', address, '--namespace', namespace, ...args], { encoding: 'utf8' })).stdout;

  let daemon: ChildProcess | undefined;
  const start = async (): Promise<void> => {
    const log = path.join(dir, 'containerd.log');
    const child = spawn('containerd', ['--config', config, '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'pipe'], detached: false });
    const chunks: Buffer[] = [];
    child.stderr?.on('data', (c: Buffer) => chunks.push(c));
    child.on('exit', () => void writeFile(log, Buffer.concat(chunks)).catch(() => {}));
    daemon = child;
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`containerd exited at start: ${Buffer.concat(chunks).toString()}`);
      if (await ctr(['version']).then(() => true, () => false)) return;
      if (Date.now() > deadline) throw new Error(`containerd did not answer at ${address}: ${Buffer.concat(chunks).toString()}`);
      await sleep(50);
    }
  };
  const stop = async (): Promise<void> => {
    const child = daemon;
    daemon = undefined;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };

  await start();
  return {
    address,
    dir,
    ctr,
    async restart() {
      await stop();
      await start();
    },
    stop,
    start,
    async close() {
      // Shims outlive the daemon: end their tasks first, so no process or rootfs mount stays behind.
      if (daemon !== undefined) {
        for (const ns of (await ctr(['namespaces', 'ls', '-q']).catch(() => '')).split('\n').filter(Boolean)) {
          for (const id of (await ctr(['tasks', 'ls', '-q'], ns).catch(() => '')).split('\n').filter(Boolean)) {
            await ctr(['tasks', 'delete', '--force', id], ns).catch(() => '');
          }
          // The shims keep runc's state per namespace in a host-wide directory; drop ours once empty.
          await rmdir(path.join('/run/containerd/runc', ns)).catch(() => undefined);
        }
      }
      await stop();
      // A shim whose last task was deleted just before the daemon stopped
      // may never have been told to shut down; with its daemon gone, nothing
      // else will end it.
      for (const pid of await shimPids('-address', address)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // Gone already.
        }
      }
      // Never delete through a mount: a leftover rootfs bind would take the test's rootfs with it.
      const mounted = (await readFile('/proc/self/mountinfo', 'utf8'))
        .split('\n')
        .map((line) => line.split(' ')[4] ?? '')
        .filter((m) => m.startsWith(`${dir}/`))
        .sort()
        .reverse();
      for (const m of mounted) await run('umount', ['-l', m]).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The pids of the runc v2 shims serving tasks, started with `flag value`
 * (`-address` a daemon's socket, `-namespace` a namespace). The shim's
 * `start` and `delete` commands, which containerd runs for a moment around
 * each task, are not serving shims.
 */
export async function shimPids(flag: '-address' | '-namespace', value: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const args = (await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')).split('\0').filter((a) => a !== '');
    const command = args.at(-1);
    if (command === 'start' || command === 'delete') continue;
    if (args[0]?.endsWith('containerd-shim-runc-v2') && args[args.indexOf(flag) + 1] === value) pids.push(Number(entry));
  }
  return pids;
}
