/**
 * The /etc/resolv.conf a sandboxed container gets: the host's, except that
 * a nameserver on the host's loopback (systemd-resolved's 127.0.0.53,
 * a dnsmasq on 127.0.0.1) means nothing inside another network namespace.
 * Those are replaced with the upstream servers the host's resolver uses
 * when they can be found (systemd-resolved writes them to
 * /run/systemd/resolve/resolv.conf); when none can, the op fails with what
 * to do, rather than running with a DNS that silently never answers.
 */
import { readFile } from 'node:fs/promises';
import { ERROR_CODES, KilnError } from '../errors.js';

/** Where the upstream servers of a local stub resolver are found, in order. */
export const UPSTREAM_RESOLV_CONFS: readonly string[] = ['/run/systemd/resolve/resolv.conf'];

/** Options of `containerResolvConf`. */
export interface ResolvConfOptions {
  /** The host's file; default /etc/resolv.conf. */
  readonly hostFile?: string;
  /** Files that may list the upstream servers of a loopback resolver; default UPSTREAM_RESOLV_CONFS. */
  readonly upstreamFiles?: readonly string[];
}

/** The container's resolv.conf text, or a NETWORK error naming the file and the fix. */
export async function containerResolvConf(options: ResolvConfOptions = {}): Promise<string> {
  const hostFile = options.hostFile ?? '/etc/resolv.conf';
  let text: string;
  try {
    text = await readFile(hostFile, 'utf8');
  } catch (err) {
    // No file: the resolver's defaults (a nameserver on the local host) cannot work either.
    throw new KilnError(ERROR_CODES.NETWORK, `cannot read ${hostFile} for the containers' DNS configuration (${(err as Error).message}): pass --resolv-conf FILE`, { cause: err });
  }
  const parsed = parseResolvConf(text);
  if (parsed.nameservers.length > 0 && parsed.nameservers.every((ns) => !isLoopback(ns))) return text;
  const kept = parsed.nameservers.filter((ns) => !isLoopback(ns));
  let upstream = kept;
  if (upstream.length === 0) {
    for (const file of options.upstreamFiles ?? UPSTREAM_RESOLV_CONFS) {
      const servers = parseResolvConf(await readFile(file, 'utf8').catch(() => '')).nameservers.filter((ns) => !isLoopback(ns));
      if (servers.length > 0) {
        upstream = servers;
        break;
      }
    }
  }
  if (upstream.length === 0) {
    const listed = parsed.nameservers.length === 0 ? 'lists no nameserver' : `lists only loopback nameservers (${parsed.nameservers.join(', ')})`;
    throw new KilnError(
      ERROR_CODES.NETWORK,
      `${hostFile} ${listed}, which a container in its own network namespace cannot reach, and no upstream server was found: pass --resolv-conf FILE (or set KILN_RESOLV_CONF) naming reachable nameservers`,
    );
  }
  return [...parsed.otherLines, ...upstream.map((ns) => `nameserver ${ns}`)].join('\n') + '\n';
}

/** The nameserver addresses of a resolv.conf, and its other lines (search, options) as they are. */
export function parseResolvConf(text: string): { nameservers: string[]; otherLines: string[] } {
  const nameservers: string[] = [];
  const otherLines: string[] = [];
  for (const line of text.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields[0] === 'nameserver' && fields[1] !== undefined) nameservers.push(fields[1]);
    else if (line.trim() !== '' && !line.trim().startsWith('#') && !line.trim().startsWith(';')) otherLines.push(line.trim());
  }
  return { nameservers, otherLines };
}

function isLoopback(address: string): boolean {
  return address.startsWith('127.') || address === '::1' || address === '0.0.0.0' || address === '::';
}
