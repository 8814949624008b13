/**
 * Per-host registry settings (what `[registry."HOST"]` in kiln.toml holds,
 * as buildkitd.toml has them) and how a host is reached: plain HTTP, HTTPS,
 * or, for loopback hosts nobody configured, HTTPS with a fallback to plain
 * HTTP when the HTTPS connection fails other than on the certificate
 * (Docker and containerd treat loopback registries the same way).
 */

/** Settings for one registry host (`docker.io`, `HOST[:PORT]`). */
export interface RegistryHostConfig {
  /**
   * Hosts (`HOST[:PORT]`, or `HOST[:PORT]/PATH` when the mirror serves the
   * repositories under PATH) tried in order before this one for pulls; each
   * host has its own settings.
   */
  readonly mirrors?: readonly string[];
  /** Plain HTTP (true), HTTPS only (false); unset: HTTPS, with a fallback to plain HTTP for loopback hosts. */
  readonly http?: boolean;
  /** HTTPS without verifying the server's certificate, then plain HTTP when HTTPS fails (as buildkitd's `insecure`). */
  readonly insecure?: boolean;
  /** PEM files of CA certificates trusted for this host, beside the system's. */
  readonly ca?: readonly string[];
}

/** Settings by host. */
export type RegistryHosts = Readonly<Record<string, RegistryHostConfig>>;

/** How a host is reached. */
export type HostScheme = 'http' | 'https' | 'https-then-http';

/** Names Docker Hub goes by in configs; kiln's references say `docker.io`. */
const DOCKER_HUB_ALIASES: ReadonlySet<string> = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);

/** The host a config key stands for (`index.docker.io` is `docker.io`). */
export function canonicalHost(host: string): string {
  return DOCKER_HUB_ALIASES.has(host) ? 'docker.io' : host;
}

/** The host name of `HOST[:PORT]` (IPv6 in brackets), lowercased, without brackets. */
function hostname(host: string): string {
  const bracketed = /^\[([^\]]*)\](?::\d+)?$/.exec(host);
  if (bracketed !== null) return (bracketed[1] ?? '').toLowerCase();
  // A bare IPv6 address has more than one colon and no port.
  if (host.indexOf(':') !== host.lastIndexOf(':')) return host.toLowerCase();
  return (host.split(':')[0] ?? '').toLowerCase();
}

/** Whether `host` (`HOST[:PORT]`) is this machine's loopback: `localhost`, `127.0.0.0/8` or `::1`. */
export function isLoopbackHost(host: string): boolean {
  const name = hostname(host);
  if (name === 'localhost' || name.endsWith('.localhost')) return true;
  if (name === '::1' || name === '0:0:0:0:0:0:0:1') return true;
  const octets = name.split('.');
  return octets.length === 4 && octets[0] === '127' && octets.every((o) => /^\d{1,3}$/.test(o) && Number(o) <= 255);
}

/**
 * How to reach `host`, from its settings and whether it was named with
 * `--insecure-registry`. A host given CAs is meant to speak TLS, so only
 * `insecure` lets it fall back to plain HTTP.
 */
export function hostScheme(host: string, config: RegistryHostConfig | undefined, insecureRegistry: boolean): HostScheme {
  if (insecureRegistry || config?.http === true) return 'http';
  if (config?.insecure === true) return 'https-then-http';
  if (config?.http === undefined && config?.ca === undefined && isLoopbackHost(host)) return 'https-then-http';
  return 'https';
}
