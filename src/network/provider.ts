/**
 * The session's network provider (see types.ts). Nothing is detected or
 * set up until a build first asks: a build without sandboxed exec ops never
 * looks for CNI plugins. The CNI provider's default network is a bridge
 * (`kiln0`) with host-local addresses on a /16 no host route overlaps, and
 * one set of host rules (NAT for egress, forwarding to and from the bridge)
 * for the whole subnet; its config list is written under kiln's root for
 * whoever wants to read it. A user's own
 * list (`--cni-config`) is used as it is.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { exec } from '../command.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import type { Logger } from '../log.js';
import { type CniRuntime, missingPlugins, type NetworkConfigList, type PluginConfig } from './cni.js';
import { NamespacePool } from './namespace-pool.js';
import { containerResolvConf } from './resolv-conf.js';
import { chooseSubnet, formatCidr, hostRoutes } from './subnet.js';
import type { NetworkProvider, NetworkProviderChoice, NetworkStatus, SandboxNetwork } from './types.js';

/** Where CNI plugins are looked for by default: Debian's package, then the upstream convention. */
export const DEFAULT_CNI_BIN_DIRS: readonly string[] = ['/usr/lib/cni', '/opt/cni/bin'];
/** Where namespaces and their records live; shared by every kiln on the host, as the bridge is. */
export const DEFAULT_NETWORK_DIR = '/run/kiln/net';
export const DEFAULT_BRIDGE = 'kiln0';

/** Options of `createNetworkProvider`. */
export interface NetworkProviderOptions {
  /** Default `auto`. */
  readonly choice?: NetworkProviderChoice;
  /** kiln's root: the default network's config list is written under it. */
  readonly root: string;
  /** Default DEFAULT_NETWORK_DIR. Must be on a tmpfs (gone at reboot, with the namespaces). */
  readonly dir?: string;
  /** The default network's subnet; default: chosen (see chooseSubnet). */
  readonly cidr?: string;
  /** A CNI config list (`.conflist` JSON) to use instead of kiln's default network. */
  readonly cniConfig?: string;
  /** Default DEFAULT_CNI_BIN_DIRS. */
  readonly cniBinDirs?: readonly string[];
  /** The host resolv.conf the containers' is made from; default /etc/resolv.conf. */
  readonly resolvConf?: string;
  /** The default network's bridge; default DEFAULT_BRIDGE. */
  readonly bridge?: string;
  /** Namespaces kept ready for reuse in the process; default 16 (and as many parked on the host for the next kiln; see NamespacePool). */
  readonly maxIdle?: number;
  readonly logger?: Logger;
}

interface Ready {
  readonly status: NetworkStatus;
  readonly pool?: NamespacePool;
  /** Why a namespace cannot be given (e.g. DNS), when the network itself is fine. */
  readonly refusal?: KilnError;
}

/** A provider that detects and sets up on first use. */
export function createNetworkProvider(options: NetworkProviderOptions): NetworkProvider {
  let ready: Promise<Ready> | undefined;
  const setup = (): Promise<Ready> => (ready ??= prepare(options));
  return {
    status: async () => (await setup()).status,
    acquire: async (): Promise<SandboxNetwork> => {
      const { status, pool, refusal } = await setup();
      if (refusal !== undefined) throw refusal;
      if (pool !== undefined) return { kind: 'namespace', lease: await pool.acquire() };
      if (status.provider === 'host') return { kind: 'host' };
      return { kind: 'loopback', ...(status.unavailable === undefined ? {} : { unavailable: status.unavailable }) };
    },
    prewarm: (count) => {
      void setup().then(
        (r) => r.pool?.prewarm(count),
        () => undefined,
      );
    },
    close: async () => {
      if (ready === undefined) return;
      const r = await ready.catch(() => undefined);
      await r?.pool?.close();
    },
  };
}

async function prepare(options: NetworkProviderOptions): Promise<Ready> {
  const choice = options.choice ?? 'auto';
  if (choice === 'host') return { status: { provider: 'host', detail: "sandboxed exec ops use the host's network" } };
  if (choice === 'none') return { status: { provider: 'none', detail: 'sandboxed exec ops have loopback only' } };
  const runtime: CniRuntime = { binDirs: options.cniBinDirs ?? DEFAULT_CNI_BIN_DIRS };
  const dir = options.dir ?? DEFAULT_NETWORK_DIR;
  let network: NetworkConfigList;
  let detail: string;
  try {
    const config = await networkConfig(options, dir);
    ({ network, detail } = config);
    const missing = await missingPlugins(runtime, network);
    if (missing.length > 0) {
      throw new KilnError(ERROR_CODES.NETWORK, `CNI plugins ${missing.join(', ')} not found in ${runtime.binDirs.join(':')}: install containernetworking-plugins or pass --cni-bin-dir`);
    }
    if (process.getuid?.() !== 0) throw new KilnError(ERROR_CODES.NETWORK, 'CNI networking needs root');
    await config.hostRules?.();
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    if (choice === 'cni') throw err instanceof KilnError ? err : new KilnError(ERROR_CODES.NETWORK, reason, { cause: err });
    options.logger?.debug({ reason }, 'CNI networking is unavailable: sandboxed exec ops get loopback only');
    return { status: { provider: 'none', detail: `loopback only: CNI unavailable (${reason})`, unavailable: reason } };
  }
  let resolvConf: string;
  try {
    resolvConf = await containerResolvConf(options.resolvConf === undefined ? {} : { hostFile: options.resolvConf });
  } catch (err) {
    return { status: { provider: 'cni', detail }, refusal: err instanceof KilnError ? err : new KilnError(ERROR_CODES.NETWORK, String(err)) };
  }
  const pool = await NamespacePool.open({
    dir,
    runtime,
    network,
    resolvConf,
    ...(options.maxIdle === undefined ? {} : { maxIdle: options.maxIdle }),
    // A user's network may have plugins whose state kiln does not know: torn down with the process, never parked.
    ...(options.cniConfig === undefined ? {} : { maxParked: 0 }),
    ...(options.logger === undefined ? {} : { logger: options.logger }),
  });
  return { status: { provider: 'cni', detail }, pool };
}

/** The user's config list, or kiln's default network (written under the root). */
async function networkConfig(options: NetworkProviderOptions, dir: string): Promise<{ network: NetworkConfigList; detail: string; hostRules?: () => Promise<void> }> {
  if (options.cniConfig !== undefined) {
    const network = await readConfigList(options.cniConfig);
    return { network, detail: `CNI network "${network.name}" from ${options.cniConfig}` };
  }
  const bridge = options.bridge ?? DEFAULT_BRIDGE;
  const subnet = chooseSubnet({ routes: await hostRoutes(), bridge, ...(options.cidr === undefined ? {} : { requested: options.cidr }) });
  // No per-container NAT or firewall rules (the bridge plugin's ipMasq, the
  // firewall plugin): each costs several iptables runs, serialized on the
  // xtables lock, on every namespace's set-up and teardown. One set of rules
  // for the whole subnet does the same (hostRules), as Docker's bridge does.
  const plugins: PluginConfig[] = [
    {
      type: 'bridge',
      bridge,
      isGateway: true,
      ipMasq: false,
      hairpinMode: true,
      ipam: { type: 'host-local', ranges: [[{ subnet: formatCidr(subnet) }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: path.join(dir, 'ipam') },
    },
  ];
  const network: NetworkConfigList = { cniVersion: '1.0.0', name: 'kiln', plugins };
  const file = path.join(options.root, 'network', 'kiln.conflist');
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(`${file}.${process.pid}.tmp`, `${JSON.stringify(network, null, 2)}\n`);
  await rename(`${file}.${process.pid}.tmp`, file);
  return { network, detail: `bridge ${bridge}, ${formatCidr(subnet)}, NAT to the host's network`, hostRules: () => ensureHostRules(bridge, formatCidr(subnet)) };
}

async function readConfigList(file: string): Promise<NetworkConfigList> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new KilnError(ERROR_CODES.USAGE, `--cni-config ${file}: ${(err as Error).message}`, { cause: err });
  }
  const list = parsed as Partial<NetworkConfigList> & { type?: unknown };
  // A single plugin's config (`.conf`) is a list of one.
  if (typeof list.type === 'string' && list.plugins === undefined) {
    const { cniVersion, name, ...plugin } = parsed as Record<string, unknown>;
    return checkList(file, { cniVersion, name, plugins: [plugin] });
  }
  return checkList(file, list);
}

function checkList(file: string, list: Record<string, unknown>): NetworkConfigList {
  const { cniVersion, name, plugins } = list;
  if (typeof cniVersion !== 'string' || typeof name !== 'string' || !Array.isArray(plugins) || plugins.length === 0) {
    throw new KilnError(ERROR_CODES.USAGE, `--cni-config ${file}: a CNI config list needs "cniVersion", "name" and a non-empty "plugins" array`);
  }
  for (const [i, plugin] of plugins.entries()) {
    if (typeof plugin !== 'object' || plugin === null || typeof (plugin as { type?: unknown }).type !== 'string') {
      throw new KilnError(ERROR_CODES.USAGE, `--cni-config ${file}: plugins[${i}] has no "type"`);
    }
  }
  return { cniVersion, name, plugins: plugins as PluginConfig[] };
}

/** Marks kiln's rules, so that whoever lists the host's rules can tell them apart. */
const RULE_COMMENT = 'kiln: containers on the bridge';

/**
 * The host's side of the default network, once per host (checked by every
 * kiln, added when missing, kept like the bridge): IP forwarding on,
 * masquerade for the subnet's traffic that leaves by another interface, and
 * forwarding accepted to and from the bridge ahead of a FORWARD policy that
 * drops (Docker sets one). Fails when iptables is not usable: `auto` then
 * falls back to loopback only, with this as the reason.
 */
async function ensureHostRules(bridge: string, subnet: string): Promise<void> {
  await writeFile('/proc/sys/net/ipv4/ip_forward', '1\n').catch((err: unknown) => {
    throw new KilnError(ERROR_CODES.NETWORK, `cannot turn on IPv4 forwarding (/proc/sys/net/ipv4/ip_forward): ${(err as Error).message}`);
  });
  const comment = ['-m', 'comment', '--comment', RULE_COMMENT];
  const rules: { table: string; chain: string; add: '-A' | '-I'; spec: string[] }[] = [
    { table: 'nat', chain: 'POSTROUTING', add: '-A', spec: ['-s', subnet, '!', '-o', bridge, ...comment, '-j', 'MASQUERADE'] },
    { table: 'filter', chain: 'FORWARD', add: '-I', spec: ['-i', bridge, ...comment, '-j', 'ACCEPT'] },
    { table: 'filter', chain: 'FORWARD', add: '-I', spec: ['-o', bridge, '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', ...comment, '-j', 'ACCEPT'] },
  ];
  // The checks run at once: they are on the way to the first container of a
  // build, and each is a process that mostly waits for its own start.
  const present = await Promise.all(rules.map((rule) => iptables(['-t', rule.table, '-C', rule.chain, ...rule.spec])));
  for (const [i, rule] of rules.entries()) {
    const check = present[i];
    if (check?.code === 0) continue;
    // -C answers 1 for "no such rule"; anything else is iptables itself failing.
    if (check?.code !== 1) throw new KilnError(ERROR_CODES.NETWORK, `iptables is not usable: ${check?.stderr.trim() || `exit code ${check?.code ?? 'none'}`}: install iptables`);
    const added = await iptables(['-t', rule.table, rule.add, rule.chain, ...rule.spec]);
    if (added.code !== 0) throw new KilnError(ERROR_CODES.NETWORK, `cannot add kiln's ${rule.table} ${rule.chain} rule with iptables: ${added.stderr.trim()}`);
  }
}

function iptables(args: readonly string[]): Promise<{ code: number | null; stderr: string }> {
  return exec({ file: 'iptables', args: ['-w', '10', ...args] });
}
