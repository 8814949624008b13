/**
 * A git source's credentials, only ever from the build's secrets and ssh
 * agents: `git.authheadersecret` (the secret is the whole Authorization
 * value), `git.authtokensecret` (a token, sent as Basic `x-access-token`),
 * a `user:password` the URL carried (taken out of it by the parser), and
 * `git.mountsshsock` (an `--ssh` id; `default` when not named) with
 * `git.knownsshhosts`. They reach git through its environment only
 * (GIT_CONFIG_COUNT/KEY/VALUE for `http.<url>.extraHeader`, GIT_SSH_COMMAND,
 * SSH_AUTH_SOCK), never argv, a URL, the cache key or a file under kiln's root.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ERROR_CODES, MissingGrantError, OpError } from '../../errors.js';
import type { GitSourceSpec } from '../../llb/git-identifier.js';

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
 * Refuses, before anything runs, an op whose secret or ssh agent the build
 * was not given. Secrets of an http remote only: a git:// or ssh remote has
 * no headers, and an ssh remote needs an agent.
 */
export function checkCredentials(spec: GitSourceSpec, creds: CredentialAttrs, grants: { readonly secrets: ReadonlyMap<string, Uint8Array>; readonly ssh: ReadonlyMap<string, string> }, site: Site): void {
  for (const [attr, id] of [
    ['git.authheadersecret', creds.authHeaderSecret],
    ['git.authtokensecret', creds.authTokenSecret],
  ] as const) {
    if (id === undefined || grants.secrets.has(id)) continue;
    throw new MissingGrantError(ERROR_CODES.SECRET, `op "${site.op}" needs secret "${id}" for ${attr}, but it was not given`, {
      op: site.op,
      field: site.field(attr),
      grant: { kind: 'secret', id },
    });
  }
  if (spec.transport === 'ssh') {
    const id = sshIdOf(creds);
    if (!grants.ssh.has(id)) {
      throw new MissingGrantError(ERROR_CODES.SSH, `op "${site.op}" fetches over ssh with agent "${id}", but it was not given`, {
        op: site.op,
        field: site.field(creds.sshId === undefined ? 'identifier' : 'git.mountsshsock'),
        grant: { kind: 'ssh', id },
      });
    }
  }
}

/** The environment git runs with for one op, and the temp files it needs; close when done. */
export interface GitCredentials extends AsyncDisposable {
  readonly env: Readonly<Record<string, string>>;
  close(): Promise<void>;
}

/** The Authorization value the op sends to an http remote, if any. */
function authorization(spec: GitSourceSpec, creds: CredentialAttrs, secrets: ReadonlyMap<string, Uint8Array>, site: Site): string | undefined {
  const secret = (id: string): string => Buffer.from(secrets.get(id) ?? new Uint8Array()).toString('utf8').trim();
  let value: string | undefined;
  let attr = 'identifier';
  if (creds.authHeaderSecret !== undefined) {
    value = secret(creds.authHeaderSecret);
    attr = 'git.authheadersecret';
  } else if (creds.authTokenSecret !== undefined) {
    value = `Basic ${Buffer.from(`x-access-token:${secret(creds.authTokenSecret)}`).toString('base64')}`;
    attr = 'git.authtokensecret';
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

/** Opens the op's credentials: environment entries, and a known_hosts file removed by close(). */
export async function openCredentials(
  spec: GitSourceSpec,
  creds: CredentialAttrs,
  grants: { readonly secrets: ReadonlyMap<string, Uint8Array>; readonly ssh: ReadonlyMap<string, string> },
  site: Site,
): Promise<GitCredentials> {
  const env: Record<string, string> = {};
  let tempDir: string | undefined;
  const close = async (): Promise<void> => {
    if (tempDir !== undefined) await rm(tempDir, { recursive: true, force: true });
    tempDir = undefined;
  };
  if (spec.transport === 'http') {
    const value = authorization(spec, creds, grants.secrets, site);
    if (value !== undefined) {
      // Scoped to the remote's URL, so a submodule on another host never receives it.
      env['GIT_CONFIG_COUNT'] = '1';
      env['GIT_CONFIG_KEY_0'] = `http.${spec.url}.extraHeader`;
      env['GIT_CONFIG_VALUE_0'] = `Authorization: ${value}`;
    }
  }
  if (spec.transport === 'ssh') {
    const socket = grants.ssh.get(sshIdOf(creds));
    if (socket !== undefined) env['SSH_AUTH_SOCK'] = socket;
    // No user ssh config: the agent the op names is the only key, the hosts it gives the only ones trusted.
    const command = ['ssh', '-F', '/dev/null', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes'];
    if (creds.knownHosts !== undefined) {
      tempDir = await mkdtemp(join(tmpdir(), 'kiln-git-ssh-'));
      const file = join(tempDir, 'known_hosts');
      await writeFile(file, creds.knownHosts.endsWith('\n') ? creds.knownHosts : `${creds.knownHosts}\n`, { mode: 0o600 });
      command.push('-o', `UserKnownHostsFile=${file}`, '-o', 'GlobalKnownHostsFile=/dev/null');
    }
    env['GIT_SSH_COMMAND'] = command.map(shellWord).join(' ');
    env['GIT_SSH_VARIANT'] = 'ssh';
  }
  return { env, close, [Symbol.asyncDispose]: close };
}
