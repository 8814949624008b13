/**
 * fetch with each registry host's TLS settings from kiln.toml: its own CAs
 * beside the system's (`ca`), or no certificate check (`insecure`). Global
 * fetch cannot take CAs per request, undici's own fetch with an Agent can;
 * undici is loaded only for hosts that need it, one Agent per host.
 */
import { readFile } from 'node:fs/promises';
import { rootCertificates } from 'node:tls';
import type { Dispatcher } from 'undici';
import { ERROR_CODES, KilnError } from '../../errors.js';
import type { RegistryHostConfig, RegistryHosts } from './hosts.js';

/** What a request takes: global fetch's init, with a streamed body's `duplex`. */
export type FetchInit = RequestInit & { readonly duplex?: 'half' };

type BoundFetch = (url: URL, init: FetchInit) => Promise<Response>;

/** Sends requests to registry hosts and their token servers with the hosts' TLS settings. */
export class HostFetch {
  readonly #hosts: ReadonlyMap<string, RegistryHostConfig>;
  readonly #bound = new Map<string, Promise<BoundFetch>>();

  constructor(hosts: RegistryHosts = {}) {
    this.#hosts = new Map(Object.entries(hosts));
  }

  /** The settings kiln.toml has for `host`, if any. */
  settings(host: string): RegistryHostConfig | undefined {
    return this.#hosts.get(host);
  }

  /**
   * Fetches `url` for registry `host`. An HTTPS URL uses the TLS settings of
   * its own host when kiln.toml has them, else those of `host` (a token
   * server is reached with its registry's CAs).
   */
  fetch(host: string, url: URL, init: FetchInit): Promise<Response> {
    if (url.protocol !== 'https:') return fetch(url, init);
    const own = this.#hosts.get(url.host);
    const [settingsOf, config] = own !== undefined ? [url.host, own] : [host, this.#hosts.get(host)];
    if (config === undefined || (config.ca === undefined && config.insecure !== true)) return fetch(url, init);
    let bound = this.#bound.get(settingsOf);
    if (bound === undefined) {
      bound = bindTls(settingsOf, config);
      this.#bound.set(settingsOf, bound);
    }
    return bound.then((f) => f(url, init));
  }
}

async function bindTls(host: string, config: RegistryHostConfig): Promise<BoundFetch> {
  const extra = process.env['NODE_EXTRA_CA_CERTS'];
  const files = [...(config.ca ?? []), ...(extra === undefined || extra === '' ? [] : [extra])];
  const pems = await Promise.all(
    files.map(async (file) => {
      try {
        return await readFile(file, 'utf8');
      } catch (err) {
        throw new KilnError(ERROR_CODES.CONFIG, `cannot read the CA file ${file} configured for registry ${host}: ${(err as Error).message}`, { cause: err });
      }
    }),
  );
  const undici = await import('undici');
  const dispatcher: Dispatcher = new undici.Agent({ connect: { ca: [...rootCertificates, ...pems], rejectUnauthorized: config.insecure !== true } });
  // The init global fetch takes is what undici's takes; only the declared body types differ.
  return (url, init) => undici.fetch(url, { ...(init as unknown as Parameters<typeof undici.fetch>[1]), dispatcher });
}
