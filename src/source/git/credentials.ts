/**
 * A git source's credentials, only ever from the build's secrets and ssh
 * agents: `git.authheadersecret` (the secret is the whole Authorization
 * value), `git.authtokensecret` (a token, sent as Basic `x-access-token`),
 * a `user:password` the URL carried (taken out of it by the parser), and
 * `git.mountsshsock` (an `--ssh` id; `default` when not named) with
 * `git.knownsshhosts`. They reach git through its environment only
 * (GIT_CONFIG_COUNT/KEY/VALUE for `http.<url>.extraHeader`, GIT_SSH_COMMAND,
 * SSH_AUTH_SOCK), never argv, a URL, the cache key or a file under kiln's root.
 *
 * As in BuildKit, the auth secrets are optional: BuildKit's `llb.Git` names
 * `GIT_AUTH_HEADER` and `GIT_AUTH_TOKEN` on every git source, public or not,
 * so a definition it wrote must build without them. `ID.HOST` (the secret
 * for that host only) is looked up before `ID`, the header before the token.
 * A remote that then refuses the request gets an error that names the secret
 * the build was not given.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ERROR_CODES, MissingGrantError, OpError } from '../../errors.js';
import type { GitSourceSpec } from '../../llb/git-identifier.js';
import { trustedCertificates } from '../http/download.js';

/** The attrs of a git source op that name credentials. */
export interface CredentialAttrs {
  readonly authHeaderSecret?: string;
  readonly authTokenSecret?: string;
  readonly sshId?: string;
  readonly knownHosts?: string;
}

/** Reads the credential attrs of an op. */
export function credentialAttrs(attrs: Readonly<Record<string, string>>): CredentialAttrs {
  const pick = (key: string): string | undefined => (Object.hasOwn(attrs, key) ? attrs[key] : undefined);
  const out: { -readonly [K in keyof CredentialAttrs]: CredentialAttrs[K] } = {};
  const header = pick('git.authheadersecret');
  const token = pick('git.authtokensecret');
  const ssh = pick('git.mountsshsock');
  const hosts = pick('git.knownsshhosts');
  if (header !== undefined) out.authHeaderSecret = header;
  if (token !== undefined) out.authTokenSecret = token;
  if (ssh !== undefined) out.sshId = ssh;
  if (hosts !== undefined) out.knownHosts = hosts;
  return out;
}

/** The ssh agent id an ssh remote uses. */
export function sshIdOf(creds: CredentialAttrs): string {
  return creds.sshId ?? 'default';
}

/** Where an op's credential problem is reported. */
interface Site {
  readonly op: string;
  readonly field: (attr: string) => string;
}

/**
 * Refuses, before anything runs, an ssh remote whose agent the build was not
 * given. The auth secrets are optional (see above): {@link missingSecrets}
 * says which were not given, for the error a refused request gets.
 */
export function checkCredentials(spec: GitSourceSpec, creds: CredentialAttrs, grants: { readonly ssh: ReadonlyMap<string, string> }, site: Site): void {
  if (spec.transport === 'ssh') {
    const id = sshIdOf(creds);
    if (!grants.ssh.has(id)) {
      throw new MissingGrantError(ERROR_CODES.SSH, `op "${site.op}" fetches over ssh with agent "${id}", but it was not given`, {
        op: site.op,
        field: site.field(creds.sshId === undefined ? 'identifier' : 'git.mountsshsock'),
        grant: { kind: 'ssh', id, for: 'git source' },
      });
    }
  }
}

/** The auth secrets an http remote's op names, in the order they are tried, each with its attr. */
function secretCandidates(spec: GitSourceSpec, creds: CredentialAttrs): { readonly attr: string; readonly id: string; readonly header: boolean }[] {
  const host = new URL(spec.url).host;
  const named = [
    { attr: 'git.authheadersecret', id: creds.authHeaderSecret, header: true },
    { attr: 'git.authtokensecret', id: creds.authTokenSecret, header: false },
  ].filter((c): c is { attr: string; id: string; header: boolean } => c.id !== undefined);
  return [...named.map((c) => ({ ...c, id: `${c.id}.${host}` })), ...named];
}

/**
 * Why a refused request may have been refused: the auth secrets the op
 * names that the build was not given (neither `ID` nor `ID.HOST`), as
 * `git.authtokensecret names secret "ID"`; empty when one was given.
 */
export function missingSecrets(spec: GitSourceSpec, creds: CredentialAttrs, secrets: ReadonlyMap<string, Uint8Array>): string[] {
  if (spec.transport !== 'http' || spec.userinfo !== undefined) return [];
  const candidates = secretCandidates(spec, creds);
  if (candidates.some((c) => secrets.has(c.id))) return [];
  return candidates.slice(candidates.length / 2).map((c) => `${c.attr} names secret "${c.id}"`);
}

/** The environment git runs with for one op, and the temp files it needs; close when done. */
export interface GitCredentials extends AsyncDisposable {
  readonly env: Readonly<Record<string, string>>;
  close(): Promise<void>;
}

/** The Authorization value the op sends to an http remote, if any. */
function authorization(spec: GitSourceSpec, creds: CredentialAttrs, secrets: ReadonlyMap<string, Uint8Array>, site: Site): string | undefined {
  let value: string | undefined;
  let attr = 'identifier';
  const given = secretCandidates(spec, creds).find((c) => secrets.has(c.id));
  if (given !== undefined) {
    const secret = Buffer.from(secrets.get(given.id) ?? new Uint8Array()).toString('utf8').trim();
    value = given.header ? secret : `Basic ${Buffer.from(`x-access-token:${secret}`).toString('base64')}`;
    attr = given.attr;
  } else if (spec.userinfo !== undefined) {
    value = `Basic ${Buffer.from(`${spec.userinfo.user}:${spec.userinfo.password}`).toString('base64')}`;
  }
  // A line break would end the header and start another: refuse, without quoting the value.
  if (value !== undefined && /[\r\n\0]/.test(value)) {
    throw new OpError(ERROR_CODES.SECRET, `op "${site.op}": the credential for ${attr} contains a line break`, { op: site.op, field: site.field(attr) });
  }
  return value;
}

/** Quotes one word for the shell git runs GIT_SSH_COMMAND with. */
function shellWord(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/** Where an op's credential files go. */
export interface CredentialFilesOptions {
  /**
   * Makes the empty directory for them. The source gives one under kiln's
   * root named for this process, so that what a killed kiln leaves is removed
   * by the next one; default a new directory in the system's temp dir.
   */
  readonly makeTempDir?: () => Promise<string>;
}

/**
 * Opens the op's credentials: environment entries, and the files they name
 * (known_hosts; the CA bundle, see {@link trustedBundle}) in a temp dir that
 * close() removes.
 */
export async function openCredentials(
  spec: GitSourceSpec,
  creds: CredentialAttrs,
  grants: { readonly secrets: ReadonlyMap<string, Uint8Array>; readonly ssh: ReadonlyMap<string, string> },
  site: Site,
  options: CredentialFilesOptions = {},
): Promise<GitCredentials> {
  const makeTempDir = options.makeTempDir ?? (() => mkdtemp(join(tmpdir(), 'kiln-git-')));
  const env: Record<string, string> = {};
  const config: [string, string][] = [];
  let tempDir: string | undefined;
  const close = async (): Promise<void> => {
    if (tempDir !== undefined) await rm(tempDir, { recursive: true, force: true });
    tempDir = undefined;
  };
  const tempFile = async (name: string, content: string): Promise<string> => {
    tempDir ??= await makeTempDir();
    const file = join(tempDir, name);
    await writeFile(file, content, { mode: 0o600 });
    return file;
  };
  try {
    if (spec.transport === 'http') {
      const value = authorization(spec, creds, grants.secrets, site);
      if (value !== undefined) {
        // Scoped to the remote's origin: a submodule on the same server (a relative
        // URL, typically) gets it, as git's credential helpers match by host; one on another host never does.
        const { protocol, host } = new URL(spec.url);
        config.push([`http.${protocol}//${host}/.extraHeader`, `Authorization: ${value}`]);
      }
    }
    // git refuses file:// for submodules unless told (CVE-2022-39253); a file:// remote's own submodules are the user's files too.
    if (spec.transport === 'file') config.push(['protocol.file.allow', 'always']);
    const bundle = trustedBundle();
    if (bundle !== undefined) env['GIT_SSL_CAINFO'] = await tempFile('ca.pem', bundle);
    if (spec.transport === 'ssh') {
      const socket = grants.ssh.get(sshIdOf(creds));
      if (socket !== undefined) env['SSH_AUTH_SOCK'] = socket;
      // No user ssh config: the agent the op names is the only key, the hosts it gives the only ones trusted.
      const command = ['ssh', '-F', '/dev/null', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes'];
      if (creds.knownHosts !== undefined) {
        const file = await tempFile('known_hosts', creds.knownHosts.endsWith('\n') ? creds.knownHosts : `${creds.knownHosts}\n`);
        command.push('-o', `UserKnownHostsFile=${file}`, '-o', 'GlobalKnownHostsFile=/dev/null');
      }
      env['GIT_SSH_COMMAND'] = command.map(shellWord).join(' ');
      env['GIT_SSH_VARIANT'] = 'ssh';
    }
  } catch (err) {
    await close();
    throw err;
  }
  if (config.length > 0) env['GIT_CONFIG_COUNT'] = String(config.length);
  config.forEach(([key, value], i) => {
    env[`GIT_CONFIG_KEY_${i}`] = key;
    env[`GIT_CONFIG_VALUE_${i}`] = value;
  });
  return { env, close, [Symbol.asyncDispose]: close };
}

/**
 * The CAs git trusts over https when the environment adds one
 * (NODE_EXTRA_CA_CERTS, SSL_CERT_FILE): the same set HTTP sources trust,
 * as one PEM bundle. Undefined otherwise: git's own default, the system's.
 */
function trustedBundle(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (!env['NODE_EXTRA_CA_CERTS'] && !env['SSL_CERT_FILE']) return undefined;
  return `${trustedCertificates(env).join('\n')}\n`;
}
