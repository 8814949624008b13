/**
 * HTTP to registries: one request with its auth round (a 401 is answered
 * once, with a token or credentials), retries with exponential backoff for
 * what may pass (5xx, 429, connection resets and refusals, bodies cut
 * short), and the errors a person can act on for what will not.
 */
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { ERROR_CODES, KilnError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { HostFetch } from './host-fetch.js';
import { hostScheme, type HostScheme } from './hosts.js';

/** A request to one registry host. */
export interface RegistryRequest {
  readonly method: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH';
  readonly url: URL;
  /** The registry host (`domain` of the reference) whose credentials and tokens apply. */
  readonly host: string;
  /** Token scopes, e.g. `repository:library/busybox:pull`. */
  readonly scopes: readonly string[];
  readonly headers?: Readonly<Record<string, string>>;
  /** Makes the body; called again when the request is resent after a 401, since a stream is read only once. */
  readonly body?: () => NonNullable<RequestInit['body']>;
  readonly signal?: AbortSignal | undefined;
}

/**
 * A failed exchange (no answer, a cut body, a 5xx), as opposed to an answer
 * the caller judges. `retrying` turns it into E_REGISTRY naming what was
 * being fetched, after retrying it when it is `transient`.
 */
export class ExchangeError extends Error {
  readonly transient: boolean;
  constructor(message: string, transient: boolean, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'ExchangeError';
    this.transient = transient;
  }
}

/** Socket-level failures that say nothing about the request itself. */
const TRANSIENT_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
]);

/** The code of a socket-level failure that may pass (a reset, a timeout), else undefined. */
export function transientCode(err: unknown): string | undefined {
  const code = errorCode(err);
  return code !== undefined && TRANSIENT_CODES.has(code) ? code : undefined;
}

/** The first error code in an error's cause chain (undici nests the socket's error in `cause`). */
function errorCode(err: unknown): string | undefined {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/** Whether a fetch failed because the server's certificate was not trusted (OpenSSL's verify codes, Node's name check). */
function isCertificateError(err: unknown): boolean {
  const code = errorCode(err);
  return code !== undefined && /CERT|UNABLE_TO_(GET|VERIFY)|SIGNATURE/.test(code);
}

/**
 * A network error while talking to `host` (from fetch or from reading a
 * body) as an ExchangeError, transient when retrying may help. Anything
 * else (a KilnError, say) comes back unchanged.
 */
export function networkFailure(err: unknown, host: string): unknown {
  if (err instanceof KilnError || err instanceof ExchangeError || !(err instanceof Error)) return err;
  const code = errorCode(err);
  // undici reports a body cut short as "terminated", sometimes without a code.
  if ((code !== undefined && TRANSIENT_CODES.has(code)) || err.message === 'terminated') {
    return new ExchangeError(`${host} is unreachable: ${code === 'ECONNREFUSED' ? 'connection refused' : 'connection lost'} (${code ?? err.message})`, true, err);
  }
  const detail = err.cause instanceof Error ? err.cause.message : err.message;
  // OpenSSL's messages carry a file and line; the reason is the part worth showing.
  const tls = /SSL routines:[^:]*:([^:]+)/.exec(detail)?.[1];
  const said = tls === undefined ? detail : `TLS failed: ${tls}`;
  return new ExchangeError(`cannot talk to ${host}: ${said}${code === undefined || said.includes(code) ? '' : ` (${code})`}`, false, err);
}

/** Whether a request body is read as it is sent (as opposed to bytes or a string in memory). */
function isStream(body: unknown): boolean {
  return body instanceof Readable || body instanceof ReadableStream || (typeof body === 'object' && body !== null && Symbol.asyncIterator in body);
}

/** A response body whose read errors (a reset, a body cut short) come out as ExchangeErrors. */
export async function* responseBody(res: Response, host: string): AsyncGenerator<Uint8Array> {
  try {
    for await (const chunk of res.body ?? []) yield chunk;
  } catch (err) {
    throw networkFailure(err, host);
  }
}

/** Drops a response body unread, so its connection is freed. */
export async function discard(res: Response): Promise<void> {
  await res.body?.cancel().catch(() => undefined);
}

/** The registry's own words for a failure: the first `errors[].message` of its JSON body, if it sent one. */
async function registryMessage(res: Response): Promise<string | undefined> {
  const text = await res.text().catch(() => '');
  try {
    const body = JSON.parse(text) as { errors?: { message?: unknown }[] };
    const message = body.errors?.[0]?.message;
    return typeof message === 'string' && message !== '' ? message : undefined;
  } catch {
    return undefined;
  }
}

/** What to call a status when the registry gave no message. */
const STATUS_WORDS: Readonly<Record<number, string>> = {
  401: 'authentication required',
  403: 'access denied',
  404: 'not found',
  405: 'operation not supported by this registry',
};

/**
 * What a transport asks of authentication (auth.ts's RegistryAuth is the
 * real one): the header to send, and what to retry with after a 401.
 */
export interface RequestAuthorizer {
  /** Where credentials come from, for messages. */
  readonly configFile: string;
  hasCredentials(host: string): Promise<boolean>;
  header(host: string, scopes: readonly string[], signal?: AbortSignal): Promise<string | undefined>;
  challenged(host: string, wwwAuthenticate: string | null, scopes: readonly string[], refused: string | undefined, signal?: AbortSignal): Promise<string | undefined>;
}

/** Options of a transport. */
export interface TransportOptions {
  readonly auth: RequestAuthorizer;
  /** Hosts spoken to over plain HTTP (`--insecure-registry`). */
  readonly insecureHosts: readonly string[];
  /** Sends with the per-host settings of kiln.toml (CAs, unverified TLS), which also say which hosts speak plain HTTP. */
  readonly fetch: HostFetch;
  readonly logger: Logger;
  /** Attempts after the first. */
  readonly retries: number;
}

/** The first backoff; each retry waits twice as long as the one before (200, 400, 800 ms, ...). */
const FIRST_BACKOFF_MS = 200;

/**
 * What each host that may fall back to plain HTTP (a loopback host without
 * settings, an `insecure` one) turned out to speak, learnt from its first
 * exchange and kept for the life of the process, so only the first request
 * to a plain-HTTP registry pays for the refused TLS handshake.
 */
const LEARNT_SCHEMES = new Map<string, 'http' | 'https'>();

/** Sends registry requests with auth, retries and error mapping. */
export class RegistryTransport {
  readonly #auth: RequestAuthorizer;
  readonly #insecure: ReadonlySet<string>;
  readonly #fetch: HostFetch;
  readonly #logger: Logger;
  readonly #retries: number;

  constructor(options: TransportOptions) {
    this.#auth = options.auth;
    this.#insecure = new Set(options.insecureHosts);
    this.#fetch = options.fetch;
    this.#logger = options.logger;
    this.#retries = options.retries;
  }

  /** How `host` is reached (see hosts.ts). */
  scheme(host: string): HostScheme {
    return hostScheme(host, this.#fetch.settings(host), this.#insecure.has(host));
  }

  /** The URL of `/v2/PATH` on `host` (Docker Hub's API lives on its own host). */
  url(host: string, path: string): URL {
    const scheme = this.scheme(host);
    const protocol = scheme === 'https-then-http' ? (LEARNT_SCHEMES.get(host) ?? 'https') : scheme;
    return new URL(`${protocol}://${host === 'docker.io' ? 'registry-1.docker.io' : host}/v2/${path}`);
  }

  /**
   * Sends one request, answering a 401 once. 5xx and 429 answers and
   * network errors throw ExchangeError (for `retrying`); every other status
   * comes back to the caller.
   */
  async send(request: RegistryRequest): Promise<Response> {
    const { host, scopes, signal } = request;
    let authorization = await this.#auth.header(host, scopes, signal);
    for (let round = 0; ; round++) {
      const res = await this.#exchange(request, authorization);
      if (res.status === 401 && round === 0) {
        const renewed = await this.#auth.challenged(host, res.headers.get('www-authenticate'), scopes, authorization, signal);
        if (renewed !== undefined) {
          await discard(res);
          authorization = renewed;
          continue;
        }
      }
      if (res.status >= 500 || res.status === 429) {
        await discard(res);
        throw new ExchangeError(`${host} answered ${res.status} ${res.statusText}`.trimEnd(), true);
      }
      return res;
    }
  }

  /**
   * One exchange. A host that may fall back (see hosts.ts) is tried over
   * HTTPS first; when that fails in TLS or in connecting, the same request
   * goes over plain HTTP, and what answered is remembered for the process.
   */
  async #exchange(request: RegistryRequest, authorization: string | undefined): Promise<Response> {
    const { host } = request;
    let url = request.url;
    // Only URLs on the host itself (not an upload Location elsewhere) follow what the host was found to speak.
    const fallback = url.protocol === 'https:' && url.host === host && this.scheme(host) === 'https-then-http';
    const learnt = fallback ? LEARNT_SCHEMES.get(host) : undefined;
    // A URL made before the host was found to speak plain HTTP (a request resent after a 401, say).
    if (learnt === 'http') url = withProtocol(url, 'http:');
    const probing = fallback && learnt === undefined;
    try {
      const res = await this.#fetchUrl(request, url, authorization);
      if (probing) LEARNT_SCHEMES.set(host, 'https');
      return res;
    } catch (err) {
      request.signal?.throwIfAborted();
      const failure = networkFailure(err, host);
      // A certificate the client refused means the host does speak TLS: say so rather than try plain HTTP.
      if (probing && failure instanceof ExchangeError && !isCertificateError(err)) {
        const plain = withProtocol(url, 'http:');
        this.#logger.debug({ host, error: failure.message }, 'registry: HTTPS failed; trying plain HTTP');
        const res = await this.#fetchUrl(request, plain, authorization).catch((e: unknown) => {
          request.signal?.throwIfAborted();
          throw networkFailure(e, host);
        });
        LEARNT_SCHEMES.set(host, 'http');
        return res;
      }
      // An HTTPS handshake with a plain-HTTP server fails in TLS; say how to allow plain HTTP (never done silently).
      if (failure instanceof ExchangeError && url.protocol === 'https:' && /wrong version number|packet length too long/i.test(failure.message)) {
        failure.message += `; if ${host} speaks plain HTTP, mark it insecure (--insecure-registry ${host})`;
      }
      if (failure instanceof ExchangeError && isCertificateError(err)) {
        failure.message += `; to trust its CA, set ca = ["CA.pem"] under [registry."${host}"] in kiln.toml`;
      }
      throw failure;
    }
  }

  async #fetchUrl(request: RegistryRequest, url: URL, authorization: string | undefined): Promise<Response> {
    const headers = { ...request.headers, ...(authorization === undefined ? {} : { authorization }) };
    const body = request.body?.();
    const init = {
      method: request.method,
      headers,
      // A streamed body cannot go to a redirect's target anyway (fetch refuses
      // to send it twice), and while it may follow one, undici keeps every
      // chunk already sent until the answer comes: a layer streamed to the
      // registry as it compressed stayed whole in memory (a 1 GiB layer's
      // export peaked at 380 MiB instead of 130).
      redirect: isStream(body) ? ('error' as const) : ('follow' as const),
      ...(body === undefined ? {} : { body, duplex: 'half' as const }),
      ...(request.signal === undefined ? {} : { signal: request.signal }),
    };
    this.#logger.trace({ method: request.method, url: url.href }, 'registry request');
    try {
      return await this.#fetch.fetch(request.host, url, init);
    } finally {
      // A file stream the server answered before reading (a 401, an error) would keep its descriptor open.
      if (body instanceof Readable) body.destroy();
    }
  }

  /**
   * Runs `attempt` until it succeeds, retrying transient ExchangeErrors with
   * backoff. A failed exchange that is not transient, or the last one when
   * the retries run out, becomes E_REGISTRY prefixed with `what` (the
   * reference or blob being worked on). `retries` overrides the
   * transport's own count (a mirror gets fewer: others come after it).
   */
  async retrying<T>(what: string, attempt: () => Promise<T>, signal?: AbortSignal, retries = this.#retries): Promise<T> {
    for (let n = 0; ; n++) {
      try {
        return await attempt();
      } catch (err) {
        signal?.throwIfAborted();
        if (!(err instanceof ExchangeError)) throw err;
        if (!err.transient) throw new KilnError(ERROR_CODES.REGISTRY, `${what}: ${err.message}`, { cause: err });
        if (n >= retries) {
          const attempts = n + 1;
          throw new KilnError(ERROR_CODES.REGISTRY, `${what}: ${err.message}, after ${attempts} attempt${attempts === 1 ? '' : 's'}`, { cause: err });
        }
        const delay = FIRST_BACKOFF_MS * 2 ** n;
        this.#logger.debug({ what, error: err.message, retryInMs: delay }, 'registry request failed; retrying');
        await sleep(delay, undefined, signal === undefined ? {} : { signal }).catch((e: unknown) => {
          signal?.throwIfAborted();
          throw e;
        });
      }
    }
  }

  /**
   * The E_REGISTRY error for an unexpected answer, naming `what` and the
   * status, with what to do about a 401 or 403.
   */
  async failure(res: Response, what: string, host: string): Promise<KilnError> {
    const said = (await registryMessage(res)) ?? STATUS_WORDS[res.status] ?? (res.statusText === '' ? 'unexpected answer' : res.statusText);
    let hint = '';
    if (res.status === 401 || res.status === 403) {
      hint = (await this.#auth.hasCredentials(host))
        ? `: the credentials for ${host} in ${this.#auth.configFile} were refused or lack access`
        : `: the repository may not exist, or it needs credentials: add them for ${host} to ${this.#auth.configFile}`;
    }
    return new KilnError(ERROR_CODES.REGISTRY, `${what}: ${said} (${res.status})${hint}`);
  }
}

/** A copy of `url` with another protocol. */
function withProtocol(url: URL, protocol: 'http:' | 'https:'): URL {
  const copy = new URL(url);
  copy.protocol = protocol;
  return copy;
}
