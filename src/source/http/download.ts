/**
 * One file over HTTP(S): a GET (./wire.ts, one connection per request) that follows redirects (at most 10),
 * optionally conditional (`If-None-Match` / `If-Modified-Since`), whose body
 * streams into a temp file while it is hashed (./body-file.ts), so memory stays flat
 * whatever the size. A body the server sent gzip-encoded (`Content-Encoding:
 * gzip`) is stored decoded, as BuildKit's Go client does. What may pass (5xx, 429, resets, refused connections,
 * a stalled or cut body) is retried with exponential backoff; a 4xx is one
 * HttpStatusError naming the URL (credentials masked) and the status.
 *
 * HTTPS trusts the system's CA bundle (`SSL_CERT_FILE`, else the usual
 * Debian and Red Hat paths), node's own list, and `NODE_EXTRA_CA_CERTS`:
 * node reads the last one only for its default store, which an explicit
 * `ca` replaces, so it is added here.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { createSecureContext, rootCertificates, type SecureContext } from 'node:tls';
import { createGunzip } from 'node:zlib';
import { ExchangeError, networkFailure, transientCode } from '../../content/registry/transport.js';
import type { Digest } from '../../digest.js';
import { ERROR_CODES, KilnError, OpError } from '../../errors.js';
import { maskUrlCredentials } from '../../llb/op-name.js';
import { currentOwner } from '../../owner.js';
import { writeBodyFile } from './body-file.js';
import { contentDispositionFilename } from './options.js';
import { type ErrorSite, HttpStatusError } from './status-error.js';
import { get as wireGet, type WireResponse } from './wire.js';

/** Redirects followed before giving up (as curl's and Go's defaults, roughly). */
export const MAX_REDIRECTS = 10;
/** Attempts after the first, for what may pass. */
const RETRIES = 4;
/** The first backoff; each retry waits twice as long (200, 400, 800, 1600 ms). */
const FIRST_BACKOFF_MS = 200;
/** A connection that sends nothing for this long (connect, headers or body) is given up and retried. */
const DEFAULT_IDLE_TIMEOUT_MS = 30_000;

/** The validators of an earlier download, for a conditional request. */
export interface Validators {
  readonly etag?: string;
  readonly lastModified?: string;
}

/** What to download. */
export interface DownloadRequest {
  readonly url: URL;
  /** Extra request headers (lower-case names). */
  readonly headers: Readonly<Record<string, string>>;
  /** The Authorization header (a secret): sent to the URL's origin only, never logged. */
  readonly authorization?: string;
  /** Ask the server to answer 304 if the body still has these validators. */
  readonly conditional?: Validators;
  /** The directory the temp file goes in (kiln's scratch dir, on the snapshots' filesystem). */
  readonly dir: string;
  readonly signal: AbortSignal;
  /** Bytes received so far and the announced length; called for every chunk (throttle it). */
  readonly onProgress?: (current: number, total: number | undefined) => void;
  readonly site: ErrorSite;
  readonly idleTimeoutMs?: number;
}

/** A body downloaded into `file` (the caller removes it). */
export interface Downloaded {
  readonly status: 'downloaded';
  readonly file: string;
  readonly digest: Digest;
  readonly size: number;
  readonly validators: Validators;
  /** Where the body came from, after redirects. */
  readonly finalUrl: URL;
  /** The file name the response's Content-Disposition gives, when it gives one that can be a file name. */
  readonly suggestedFilename?: string;
}

/** The server said the body is unchanged (304). */
export interface NotModified {
  readonly status: 'not-modified';
  readonly finalUrl: URL;
}

/** Downloads `request.url` (see the file's comment). */
export async function download(request: DownloadRequest): Promise<Downloaded | NotModified> {
  const shown = maskUrlCredentials(request.url.href);
  for (let attempt = 0; ; attempt++) {
    try {
      return await downloadOnce(request);
    } catch (err) {
      request.signal.throwIfAborted();
      const failure = networkFailure(err, request.url.host);
      if (!(failure instanceof ExchangeError)) throw failure;
      if (!failure.transient || attempt >= RETRIES) {
        const after = failure.transient ? `, after ${attempt + 1} attempts` : '';
        const hint = tlsHint(failure.message, request.url);
        throw new OpError(ERROR_CODES.HTTP_SOURCE, `GET ${shown}: ${failure.message}${after}${hint}`, { ...request.site, cause: failure });
      }
      await sleep(FIRST_BACKOFF_MS * 2 ** attempt, undefined, { signal: request.signal }).catch(() => request.signal.throwIfAborted());
    }
  }
}

/** What to do about a TLS failure, for the message. */
function tlsHint(message: string, url: URL): string {
  if (/certificate|self[- ]signed|issuer|CERT_/i.test(message)) return ' (a private CA can be trusted with NODE_EXTRA_CA_CERTS=FILE)';
  if (url.protocol === 'https:' && /wrong version number|packet length too long/i.test(message)) return ' (if the server speaks plain HTTP, use an http:// URL)';
  return '';
}

async function downloadOnce(request: DownloadRequest): Promise<Downloaded | NotModified> {
  const { res, url } = await followRedirects(request).catch((err: unknown) => {
    // A server that took the connection and then said nothing is not unreachable.
    throw transientCode(err) === 'ETIMEDOUT' && err instanceof Error ? new ExchangeError(`no response: ${err.message}`, true, err) : err;
  });
  if (res.statusCode === 304 && request.conditional !== undefined) {
    res.close();
    return { status: 'not-modified', finalUrl: url };
  }
  // Any 2xx has the body (204: an empty one), as in BuildKit; a 206 is part of one, and kiln asked for no range.
  if (res.statusCode < 200 || res.statusCode > 299 || res.statusCode === 206) {
    res.close();
    const status = res.statusCode;
    if (status >= 500 || status === 429) throw new ExchangeError(`the server answered ${status} ${res.statusMessage ?? ''}`.trimEnd(), true);
    throw new HttpStatusError({ url, status, statusText: res.statusMessage, site: request.site });
  }
  const lengthHeader = res.headers['content-length'];
  const total = lengthHeader === undefined ? undefined : Number(lengthHeader);
  const encoding = res.headers['content-encoding']?.trim().toLowerCase();
  const gzipped = encoding === 'gzip' || encoding === 'x-gzip';
  const file = tempFile(request.dir);
  const hash = createHash('sha256');
  let size = 0;
  try {
    await writeBodyFile(res, file, (chunk) => {
      if (!gzipped) hash.update(chunk);
      size += chunk.byteLength;
      request.onProgress?.(size, total);
    });
    if (total !== undefined && size !== total) throw new ExchangeError(`the body ended after ${size} of ${total} bytes`, true);
  } catch (err) {
    await rm(file, { force: true });
    throw cutShort(err, size, total);
  }
  const body = gzipped ? await gunzipFile(file, request.dir, request.signal) : { file, digest: `sha256:${hash.digest('hex')}` as Digest, size };
  const etag = res.headers['etag'];
  const lastModified = res.headers['last-modified'];
  const disposition = res.headers['content-disposition'];
  const suggestedFilename = disposition === undefined ? undefined : contentDispositionFilename(disposition);
  return {
    status: 'downloaded',
    ...body,
    validators: { ...(etag === undefined ? {} : { etag }), ...(lastModified === undefined ? {} : { lastModified }) },
    finalUrl: url,
    ...(suggestedFilename === undefined ? {} : { suggestedFilename }),
  };
}

function tempFile(dir: string): string {
  return path.join(dir, `${currentOwner()}-http-${randomBytes(6).toString('hex')}`);
}

/**
 * A connection that failed once the head had come: the server was reached, so
 * the message says how much of the body came (retried like the rest).
 */
function cutShort(err: unknown, size: number, total: number | undefined): unknown {
  if (err instanceof KilnError || err instanceof ExchangeError || !(err instanceof Error)) return err;
  const code = transientCode(err);
  if (code === undefined) return err;
  const of = total === undefined ? '' : ` of ${total}`;
  return new ExchangeError(`the body stopped after ${size}${of} bytes: ${err.message}${err.message.includes(code) ? '' : ` (${code})`}`, true, err);
}

/** Decodes a gzip-encoded body into a new file (removing the encoded one), hashing what it writes. */
async function gunzipFile(encoded: string, dir: string, signal: AbortSignal): Promise<{ file: string; digest: Digest; size: number }> {
  const file = tempFile(dir);
  const hash = createHash('sha256');
  let size = 0;
  const count = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      hash.update(chunk);
      size += chunk.byteLength;
      done(null, chunk);
    },
  });
  try {
    await pipeline(createReadStream(encoded), createGunzip(), count, createWriteStream(file, { flags: 'wx', mode: 0o600 }), { signal });
  } catch (err) {
    await rm(file, { force: true });
    signal.throwIfAborted();
    const detail = err instanceof Error ? err.message : String(err);
    throw new ExchangeError(`the server sent Content-Encoding: gzip, but the body is not gzip (${detail})`, false, err);
  } finally {
    await rm(encoded, { force: true });
  }
  return { file, digest: `sha256:${hash.digest('hex')}` as Digest, size };
}

/** The first answer that is not a redirect, and the URL that gave it. */
async function followRedirects(request: DownloadRequest): Promise<{ res: WireResponse; url: URL }> {
  let url = request.url;
  for (let redirects = 0; ; redirects++) {
    // Credentials go to the origin they were meant for, not to wherever a redirect points.
    const res = await get(url, requestHeaders(request, url.origin === request.url.origin), request);
    const status = res.statusCode;
    const location = res.headers['location'];
    if (![301, 302, 303, 307, 308].includes(status) || location === undefined) return { res, url };
    res.close();
    if (redirects >= MAX_REDIRECTS) {
      throw new OpError(ERROR_CODES.HTTP_SOURCE, `GET ${maskUrlCredentials(request.url.href)}: more than ${MAX_REDIRECTS} redirects`, request.site);
    }
    const next = URL.canParse(location, url.href) ? new URL(location, url) : undefined;
    if (next === undefined || (next.protocol !== 'http:' && next.protocol !== 'https:')) {
      throw new OpError(ERROR_CODES.HTTP_SOURCE, `GET ${maskUrlCredentials(url.href)}: redirected to "${location}", which is not an http(s) URL`, request.site);
    }
    url = next;
  }
}

/** Request headers that carry credentials: an http.header.* one is not sent across origins either (as Go's client drops them). */
const CREDENTIAL_HEADERS: ReadonlySet<string> = new Set(['authorization', 'proxy-authorization', 'cookie', 'cookie2', 'www-authenticate']);

/** The headers of one request; `sameOrigin` false (after a redirect to another origin) drops every credential. */
function requestHeaders(request: DownloadRequest, sameOrigin: boolean): Record<string, string> {
  const headers: Record<string, string> = { 'user-agent': 'kiln' };
  for (const [name, value] of Object.entries(request.headers)) {
    if (sameOrigin || !CREDENTIAL_HEADERS.has(name)) headers[name] = value;
  }
  if (sameOrigin && request.authorization !== undefined) headers['authorization'] = request.authorization;
  if (request.conditional?.etag !== undefined) headers['if-none-match'] = request.conditional.etag;
  if (request.conditional?.lastModified !== undefined) headers['if-modified-since'] = request.conditional.lastModified;
  return headers;
}

/** One GET (./wire.ts); resolves with the response head. An idle connection fails with ETIMEDOUT (retried). */
function get(url: URL, headers: Record<string, string>, request: DownloadRequest): Promise<WireResponse> {
  return wireGet({
    url,
    headers,
    signal: request.signal,
    idleTimeoutMs: request.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
    ...(url.protocol === 'https:' ? { secureContext: secureContext() } : {}),
  });
}

let context: SecureContext | undefined;

/** The TLS context for HTTPS: one per process, trusting the CAs the file's comment lists. */
function secureContext(): SecureContext {
  context ??= createSecureContext({ ca: trustedCertificates() });
  return context;
}

const SYSTEM_BUNDLES = ['/etc/ssl/certs/ca-certificates.crt', '/etc/pki/tls/certs/ca-bundle.crt'];

/** PEM certificates to trust: the system's bundle, node's list, NODE_EXTRA_CA_CERTS. */
export function trustedCertificates(env: NodeJS.ProcessEnv = process.env): string[] {
  const readPem = (file: string): string | undefined => {
    try {
      return readFileSync(file, 'utf8');
    } catch {
      return undefined;
    }
  };
  const system = env['SSL_CERT_FILE'] !== undefined ? readPem(env['SSL_CERT_FILE']) : SYSTEM_BUNDLES.map(readPem).find((pem) => pem !== undefined);
  const extraFile = env['NODE_EXTRA_CA_CERTS'];
  const extra = extraFile === undefined || extraFile === '' ? undefined : readPem(extraFile);
  return [...(system === undefined ? [] : [system]), ...rootCertificates, ...(extra === undefined ? [] : [extra])];
}
