/**
 * Registry authentication: credentials from Docker's config.json (its
 * `auths`, and the credential helpers it names in `credHelpers` and
 * `credsStore`), the `WWW-Authenticate` challenges a registry answers 401
 * with, and bearer tokens from the challenge's realm (the token flow of the
 * distribution spec, or OAuth2's refresh-token grant for an identity token),
 * cached per host and scope until shortly before they expire. Credentials
 * live in memory only: never logged, never written anywhere.
 */
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ERROR_CODES, KilnError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { HostFetch } from './host-fetch.js';
import { ExchangeError, networkFailure } from './transport.js';

/** A user name and password for one registry. */
export interface PasswordCredentials {
  readonly username: string;
  readonly password: string;
}

/** An OAuth2 refresh token (`docker login` keeps one as `identitytoken`), traded at the token realm for access tokens. */
export interface IdentityToken {
  readonly identityToken: string;
}

/** What config.json or a credential helper holds for one registry. */
export type Credentials = PasswordCredentials | IdentityToken;

/** The parts of config.json kiln reads. */
interface DockerConfigFile {
  readonly auths?: Readonly<
    Record<string, { readonly auth?: string; readonly username?: string; readonly password?: string; readonly identitytoken?: string }>
  >;
  readonly credsStore?: string;
  readonly credHelpers?: Readonly<Record<string, string>>;
}

/** What `docker-credential-NAME get` prints. */
interface HelperAnswer {
  readonly Username?: unknown;
  readonly Secret?: unknown;
}

/** The user name a credential helper gives with an identity token instead of a password. */
const IDENTITY_TOKEN_USER = '<token>';
/** A credential helper that has not answered by then (waiting for a keychain prompt, say) is given up on. */
const HELPER_TIMEOUT_MS = 60_000;

/** Where Docker keeps its client config: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. */
export function defaultDockerConfigPath(): string {
  const dir = process.env['DOCKER_CONFIG'];
  return path.join(dir !== undefined && dir !== '' ? dir : path.join(os.homedir(), '.docker'), 'config.json');
}

/** Hosts config.json may file Docker Hub's credentials under (`docker login` writes the first). */
const DOCKER_HUB_KEYS = ['index.docker.io', 'registry-1.docker.io', 'docker.io'];

/** A config.json key (`https://index.docker.io/v1/`, `http://host:5000`, `host:5000`) as a bare host. */
function keyHost(key: string): string {
  return key.replace(/^https?:\/\//, '').split('/')[0] ?? '';
}

/**
 * Credentials from one config.json, read once, on first use, and from the
 * credential helpers it names, each asked once per host. A missing file
 * means no credentials.
 */
export class DockerCredentials {
  /** The file read, named in messages that ask for credentials. */
  readonly file: string;
  readonly #logger: Logger;
  #config: Promise<DockerConfigFile> | undefined;
  readonly #fromHelpers = new Map<string, Promise<Credentials | undefined>>();

  constructor(file: string, logger: Logger) {
    this.file = file;
    this.#logger = logger;
  }

  /**
   * The credentials for `host` (`docker.io` or `HOST[:PORT]`), if any: from
   * the helper `credHelpers` names for the host, else from `credsStore`, as
   * Docker does; when neither is set or the helper has none, from `auths`.
   */
  async lookup(host: string): Promise<Credentials | undefined> {
    const config = await (this.#config ??= this.#read());
    const wanted = host === 'docker.io' ? DOCKER_HUB_KEYS : [host];
    const helper = Object.entries(config.credHelpers ?? {}).find(([key]) => wanted.includes(keyHost(key)))?.[1] ?? config.credsStore;
    if (helper !== undefined && helper !== '') {
      let asked = this.#fromHelpers.get(host);
      if (asked === undefined) {
        asked = this.#askHelper(helper, host);
        this.#fromHelpers.set(host, asked);
      }
      const found = await asked;
      if (found !== undefined) return found;
    }
    const entry = Object.entries(config.auths ?? {}).find(([key]) => wanted.includes(keyHost(key)))?.[1];
    if (entry?.identitytoken !== undefined && entry.identitytoken !== '') return { identityToken: entry.identitytoken };
    if (entry?.username !== undefined && entry.password !== undefined) return { username: entry.username, password: entry.password };
    if (entry?.auth !== undefined && entry.auth !== '') {
      const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon === -1) throw new KilnError(ERROR_CODES.REGISTRY, `${this.file}: the "auth" of ${host} is not base64 of USER:PASSWORD`);
      return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
    }
    return undefined;
  }

  /**
   * Runs `docker-credential-HELPER get` with the server on stdin (Docker
   * Hub's is its v1 URL, as `docker login` stores it). "Not found" is no
   * credentials; a helper that is missing or fails is an error naming it.
   */
  async #askHelper(helper: string, host: string): Promise<Credentials | undefined> {
    const program = `docker-credential-${helper}`;
    const server = host === 'docker.io' ? 'https://index.docker.io/v1/' : host;
    this.#logger.debug({ host, helper: program, file: this.file }, 'asking a credential helper');
    // Loaded here: execa is a large module that a build with no credential helper never needs.
    const { execa } = await import('execa');
    const r = await execa(program, ['get'], { input: server, reject: false, timeout: HELPER_TIMEOUT_MS, stripFinalNewline: true });
    const where = `the credential helper ${program} (named in ${this.file})`;
    // Not started at all: execvp says ENOENT, or EACCES when a directory on PATH cannot be searched.
    const spawnCode = (r as { code?: unknown }).code;
    if (r.failed && (spawnCode === 'ENOENT' || spawnCode === 'EACCES')) {
      const why = spawnCode === 'ENOENT' ? '' : ` (or cannot be run: ${spawnCode})`;
      throw new KilnError(ERROR_CODES.REGISTRY, `${where} is not on PATH${why}: install it, or remove it from ${this.file}`);
    }
    if (r.timedOut) throw new KilnError(ERROR_CODES.REGISTRY, `${where} did not answer for ${host} within ${HELPER_TIMEOUT_MS / 1000} s`);
    if (r.exitCode !== 0) {
      // The helper protocol prints the error on stdout; never the secret, which comes only on success.
      const said = (r.stdout.trim() === '' ? r.stderr : r.stdout).trim().split('\n')[0]?.slice(0, 200) ?? '';
      if (/credentials not found/i.test(said)) return undefined;
      throw new KilnError(ERROR_CODES.REGISTRY, `${where} failed for ${host} (exit ${r.exitCode ?? r.signal ?? '?'}): ${said}`);
    }
    let answer: HelperAnswer;
    try {
      answer = JSON.parse(r.stdout) as HelperAnswer;
    } catch {
      // Not even a piece of the output in the message: it may be a secret.
      throw new KilnError(ERROR_CODES.REGISTRY, `${where} answered for ${host} with something that is not JSON`);
    }
    const { Username: username, Secret: secret } = answer;
    if (typeof secret !== 'string' || secret === '') return undefined;
    if (username === IDENTITY_TOKEN_USER) return { identityToken: secret };
    if (typeof username !== 'string') throw new KilnError(ERROR_CODES.REGISTRY, `${where} answered for ${host} without a Username`);
    return { username, password: secret };
  }

  async #read(): Promise<DockerConfigFile> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw new KilnError(ERROR_CODES.REGISTRY, `cannot read Docker's config ${this.file}: ${(err as Error).message}`, { cause: err });
    }
    try {
      const parsed: unknown = JSON.parse(text);
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not a JSON object');
      return parsed;
    } catch (err) {
      throw new KilnError(ERROR_CODES.REGISTRY, `Docker's config ${this.file} is not valid JSON: ${(err as Error).message}`, { cause: err });
    }
  }
}

/** One challenge of a `WWW-Authenticate` header; the scheme is lowercased. */
export interface AuthChallenge {
  readonly scheme: string;
  readonly params: Readonly<Record<string, string>>;
}

/**
 * Parses `WWW-Authenticate` (RFC 7235): one or more challenges, each a scheme
 * followed by comma-separated `name=value` or `name="quoted value"` params.
 * A bare token after a comma starts the next challenge.
 */
export function parseChallenges(header: string): AuthChallenge[] {
  const challenges: { scheme: string; params: Record<string, string> }[] = [];
  const re = /\s*,?\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?:\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*)))?/y;
  let m: RegExpExecArray | null;
  while (re.lastIndex < header.length && (m = re.exec(header)) !== null) {
    const [, name = '', quoted, plain] = m;
    const current = challenges.at(-1);
    if (quoted === undefined && plain === undefined) challenges.push({ scheme: name.toLowerCase(), params: {} });
    else if (current !== undefined) current.params[name.toLowerCase()] = quoted?.replace(/\\(.)/g, '$1') ?? plain ?? '';
  }
  return challenges;
}

/** A bearer token and when to stop using it. */
interface CachedToken {
  readonly header: string;
  readonly expiresAt: number;
}

/** The client_id sent with a refresh-token grant (the OAuth2 spec asks clients to name themselves). */
const TOKEN_CLIENT_ID = 'kiln';

/** Tokens are considered stale this long before the server says they expire. */
const EXPIRY_MARGIN_MS = 10_000;
/** The lifetime the token spec says to assume when the server names none. */
const DEFAULT_TOKEN_SECONDS = 60;

/**
 * What to send in `Authorization` to each registry host. Learns each host's
 * scheme from its first 401, then sends credentials (or a token) up front,
 * so later requests need no extra round trip.
 */
export class RegistryAuth {
  readonly #credentials: DockerCredentials;
  readonly #logger: Logger;
  readonly #challenges = new Map<string, AuthChallenge>();
  readonly #tokens = new Map<string, CachedToken>();
  readonly #fetch: HostFetch;

  /** `fetch` reaches token servers with the TLS settings of kiln.toml (default: none). */
  constructor(credentials: DockerCredentials, logger: Logger, fetch: HostFetch = new HostFetch()) {
    this.#credentials = credentials;
    this.#logger = logger;
    this.#fetch = fetch;
  }

  /** The config file credentials come from (for messages). */
  get configFile(): string {
    return this.#credentials.file;
  }

  /** Whether config.json has credentials for `host`. */
  async hasCredentials(host: string): Promise<boolean> {
    return (await this.#credentials.lookup(host)) !== undefined;
  }

  /** The `Authorization` value for a request to `host` needing `scopes`, when the host has asked for one before. */
  async header(host: string, scopes: readonly string[], signal?: AbortSignal): Promise<string | undefined> {
    const challenge = this.#challenges.get(host);
    if (challenge === undefined) return undefined;
    if (challenge.scheme === 'basic') return basicHeader(await this.#credentials.lookup(host));
    const key = tokenKey(host, scopes);
    const cached = this.#tokens.get(key);
    if (cached !== undefined && cached.expiresAt > Date.now()) return cached.header;
    return this.#fetchToken(host, challenge, scopes, signal);
  }

  /**
   * Learns from a 401: returns the `Authorization` to retry with, or
   * undefined when retrying cannot help (no usable challenge, or the header
   * it would send is the one just refused).
   */
  async challenged(
    host: string,
    wwwAuthenticate: string | null,
    scopes: readonly string[],
    refused: string | undefined,
    signal?: AbortSignal,
  ): Promise<string | undefined> {
    const challenges = parseChallenges(wwwAuthenticate ?? '');
    const challenge = challenges.find((c) => c.scheme === 'bearer' && c.params['realm'] !== undefined) ?? challenges.find((c) => c.scheme === 'basic');
    if (challenge === undefined) return undefined;
    this.#challenges.set(host, challenge);
    const header = challenge.scheme === 'basic' ? basicHeader(await this.#credentials.lookup(host)) : await this.#fetchToken(host, challenge, scopes, signal);
    return header === refused ? undefined : header;
  }

  async #fetchToken(host: string, challenge: AuthChallenge, scopes: readonly string[], signal?: AbortSignal): Promise<string> {
    const realm = challenge.params['realm'] ?? '';
    let url: URL;
    try {
      url = new URL(realm);
    } catch (err) {
      throw new KilnError(ERROR_CODES.REGISTRY, `${host} named a token realm that is not a URL: ${JSON.stringify(realm)}`, { cause: err });
    }
    const service = challenge.params['service'];
    const credentials = await this.#credentials.lookup(host);
    const identityToken = credentials !== undefined && 'identityToken' in credentials ? credentials.identityToken : undefined;
    let init: RequestInit;
    if (identityToken !== undefined) {
      // OAuth2's refresh-token grant: the identity token is a refresh token, sent in a form body, never in the URL.
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: identityToken, client_id: TOKEN_CLIENT_ID });
      if (service !== undefined) form.set('service', service);
      if (scopes.length > 0) form.set('scope', scopes.join(' '));
      init = { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form.toString() };
    } else {
      if (service !== undefined) url.searchParams.set('service', service);
      for (const scope of scopes) url.searchParams.append('scope', scope);
      if (credentials !== undefined && 'username' in credentials) url.searchParams.set('account', credentials.username);
      const authorization = basicHeader(credentials);
      init = { headers: authorization === undefined ? {} : { authorization } };
    }
    const flow = identityToken !== undefined ? 'identity token' : credentials !== undefined ? 'credentials' : 'anonymous';
    this.#logger.debug({ host, realm: url.origin + url.pathname, scopes, flow }, 'fetching a registry token');
    let res: Response;
    try {
      res = await this.#fetch.fetch(host, url, { ...init, ...(signal === undefined ? {} : { signal }) });
    } catch (err) {
      signal?.throwIfAborted();
      throw networkFailure(err, `${host}'s token server ${url.host}`);
    }
    if (res.status >= 500 || res.status === 429) {
      await res.body?.cancel();
      throw new ExchangeError(`${host}'s token server ${url.origin} answered ${res.status}`, true);
    }
    const text = await res.text().catch((err: unknown) => {
      throw networkFailure(err, `${host}'s token server ${url.host}`);
    });
    if (!res.ok) {
      const file = this.#credentials.file;
      const hint =
        credentials === undefined
          ? `add credentials for ${host} to ${file}`
          : identityToken !== undefined
            ? `the identity token for ${host} (from ${file} or its credential helper) may have expired: log in again`
            : `check the credentials for ${host} in ${file}`;
      throw new KilnError(ERROR_CODES.REGISTRY, `${host}'s token server ${url.origin} refused a token (${res.status}): ${hint}`);
    }
    let body: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      body = JSON.parse(text) as typeof body;
    } catch (err) {
      throw new KilnError(ERROR_CODES.REGISTRY, `${host}'s token server ${url.origin} answered something that is not JSON`, { cause: err });
    }
    const token = typeof body.token === 'string' && body.token !== '' ? body.token : body.access_token;
    if (typeof token !== 'string' || token === '') {
      throw new KilnError(ERROR_CODES.REGISTRY, `${host}'s token server ${url.origin} answered without a token`);
    }
    const seconds = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : DEFAULT_TOKEN_SECONDS;
    const header = `Bearer ${token}`;
    this.#tokens.set(tokenKey(host, scopes), { header, expiresAt: Date.now() + seconds * 1000 - EXPIRY_MARGIN_MS });
    return header;
  }
}

function tokenKey(host: string, scopes: readonly string[]): string {
  return `${host} ${[...scopes].sort().join(' ')}`;
}

/** Basic auth for password credentials; an identity token cannot be sent that way. */
function basicHeader(credentials: Credentials | undefined): string | undefined {
  if (credentials === undefined || !('username' in credentials)) return undefined;
  return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}`;
}
