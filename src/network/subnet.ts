/**
 * Choosing the bridge's IPv4 subnet: one that no route of the host already
 * covers or overlaps (a subnet that shadows the host's LAN or VPN would cut
 * the host off from it), and the one kiln's bridge already has when another
 * kiln made it, so that every process on the host agrees.
 */
import { readFile } from 'node:fs/promises';
import { ERROR_CODES, KilnError } from '../errors.js';

/** An IPv4 network: address and prefix length. */
export interface Ipv4Net {
  readonly address: number;
  readonly prefix: number;
}

/** One IPv4 route of the host: its interface and destination network. */
export interface HostRoute {
  readonly iface: string;
  readonly net: Ipv4Net;
}

/** Candidate /16s for the bridge, tried in order. */
const CANDIDATES: readonly string[] = [
  ...Array.from({ length: 40 }, (_, i) => `10.${213 + i}.0.0/16`).filter((c) => Number(c.split('.')[1]) <= 254),
  ...Array.from({ length: 14 }, (_, i) => `172.${18 + i}.0.0/16`),
];

/** `a.b.c.d/n` → Ipv4Net, or undefined when it is not one. */
export function parseCidr(text: string): Ipv4Net | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(text.trim());
  if (m === null) return undefined;
  const octets = m.slice(1, 5).map(Number);
  const prefix = Number(m[5]);
  if (octets.some((o) => o > 255) || prefix > 32) return undefined;
  const address = octets.reduce((acc, o) => acc * 256 + o, 0);
  return { address: address - (address % 2 ** (32 - prefix)), prefix };
}

export function formatCidr(net: Ipv4Net): string {
  const a = net.address;
  return `${Math.floor(a / 2 ** 24)}.${Math.floor(a / 2 ** 16) % 256}.${Math.floor(a / 2 ** 8) % 256}.${a % 256}/${net.prefix}`;
}

/** Whether the two networks share an address. */
export function overlaps(a: Ipv4Net, b: Ipv4Net): boolean {
  const prefix = Math.min(a.prefix, b.prefix);
  const size = 2 ** (32 - prefix);
  return Math.floor(a.address / size) === Math.floor(b.address / size);
}

/** The host's IPv4 routes, from /proc/net/route (no process to spawn). */
export async function hostRoutes(file = '/proc/net/route'): Promise<HostRoute[]> {
  const text = await readFile(file, 'utf8').catch(() => '');
  const routes: HostRoute[] = [];
  for (const line of text.split('\n').slice(1)) {
    const [iface, destination, , , , , , mask] = line.trim().split(/\s+/);
    if (iface === undefined || destination === undefined || mask === undefined) continue;
    const address = littleEndianHex(destination);
    const maskValue = littleEndianHex(mask);
    // The kernel's masks are contiguous: the prefix is the count of ones.
    const prefix = maskValue.toString(2).replace(/0/g, '').length;
    routes.push({ iface, net: { address, prefix } });
  }
  return routes;
}

function littleEndianHex(hex: string): number {
  const n = parseInt(hex, 16);
  return ((n & 0xff) * 2 ** 24) + (((n >>> 8) & 0xff) << 16) + (((n >>> 16) & 0xff) << 8) + ((n >>> 24) & 0xff);
}

/**
 * The bridge's subnet: `requested` when given (refused if a route of
 * another interface overlaps it), else the one `bridge` already routes,
 * else the first candidate no route overlaps. The default route (a /0)
 * overlaps everything and is ignored.
 */
export function chooseSubnet(options: { readonly routes: readonly HostRoute[]; readonly bridge: string; readonly requested?: string }): Ipv4Net {
  const others = options.routes.filter((r) => r.iface !== options.bridge && r.net.prefix > 0);
  if (options.requested !== undefined) {
    const net = parseCidr(options.requested);
    if (net === undefined || net.prefix > 30) {
      throw new KilnError(ERROR_CODES.USAGE, `--network-cidr "${options.requested}" is not an IPv4 network with room for containers (e.g. 10.213.0.0/16)`);
    }
    const clash = others.find((r) => overlaps(r.net, net));
    if (clash !== undefined) {
      throw new KilnError(ERROR_CODES.USAGE, `--network-cidr ${formatCidr(net)} overlaps the host's route ${formatCidr(clash.net)} on ${clash.iface}: choose another`);
    }
    return net;
  }
  const existing = options.routes.find((r) => r.iface === options.bridge && r.net.prefix > 0);
  if (existing !== undefined) return existing.net;
  for (const candidate of CANDIDATES) {
    const net = parseCidr(candidate);
    if (net !== undefined && !others.some((r) => overlaps(r.net, net))) return net;
  }
  throw new KilnError(ERROR_CODES.NETWORK, "every candidate subnet for kiln's bridge overlaps a route of this host: pass --network-cidr");
}
