import assert from 'node:assert/strict';
import { access, readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { ERROR_CODES, MissingGrantError, OpError } from '../../../src/errors.js';
import { type GitSourceSpec, isGitSpecProblem, parseGitSource } from '../../../src/llb/git-identifier.js';
import { checkCredentials, credentialAttrs, openCredentials } from '../../../src/source/git/credentials.js';

const site = { op: 'g', field: (attr: string) => `ops.g.source.attrs["${attr}"]` };
const spec = (identifier: string, fullUrl?: string): GitSourceSpec => {
  const parsed = parseGitSource(identifier, fullUrl);
  assert.ok(!isGitSpecProblem(parsed));
  return parsed;
};
const grants = (secrets: Record<string, string> = {}, ssh: Record<string, string> = {}) => ({
  secrets: new Map(Object.entries(secrets).map(([k, v]) => [k, Buffer.from(v)])),
  ssh: new Map(Object.entries(ssh)),
});

describe('git source credentials', () => {
  it('refuses a secret or an ssh agent the build was not given, as a grant the CLI can name', () => {
    assert.throws(
      () => checkCredentials(spec('git+https://h/r'), credentialAttrs({ 'git.authtokensecret': 'tok' }), grants(), site),
      (err: unknown) => err instanceof MissingGrantError && err.code === ERROR_CODES.SECRET && err.grant.kind === 'secret' && err.field === 'ops.g.source.attrs["git.authtokensecret"]',
    );
    assert.throws(
      () => checkCredentials(spec('git://h/r', 'git@h:r.git'), credentialAttrs({}), grants(), site),
      (err: unknown) => err instanceof MissingGrantError && err.code === ERROR_CODES.SSH && err.grant.kind === 'ssh' && err.grant.id === 'default',
    );
    checkCredentials(spec('git://h/r', 'git@h:r.git'), credentialAttrs({ 'git.mountsshsock': 'k' }), grants({}, { k: '/run/agent.sock' }), site);
  });

  it('puts the Authorization header in the environment, scoped to the remote URL', async () => {
    await using token = await openCredentials(spec('git+https://h/r.git'), credentialAttrs({ 'git.authtokensecret': 'tok' }), grants({ tok: 'abc\n' }), site);
    assert.deepEqual(token.env, {
      GIT_CONFIG_COUNT: '1',
      GIT_CONFIG_KEY_0: 'http.https://h/r.git.extraHeader',
      GIT_CONFIG_VALUE_0: `Authorization: Basic ${Buffer.from('x-access-token:abc').toString('base64')}`,
    });
    await using header = await openCredentials(spec('git+https://h/r.git'), credentialAttrs({ 'git.authheadersecret': 'h' }), grants({ h: 'Bearer xyz' }), site);
    assert.equal(header.env['GIT_CONFIG_VALUE_0'], 'Authorization: Bearer xyz');
    await using userinfo = await openCredentials(spec('git+https://me:pw@h/r.git'), credentialAttrs({}), grants(), site);
    assert.equal(userinfo.env['GIT_CONFIG_VALUE_0'], `Authorization: Basic ${Buffer.from('me:pw').toString('base64')}`);
  });

  it('refuses a header value with a line break without quoting it', async () => {
    await assert.rejects(
      openCredentials(spec('git+https://h/r.git'), credentialAttrs({ 'git.authheadersecret': 'h' }), grants({ h: 'Bearer a\r\nX-Evil: 1' }), site),
      (err: unknown) => err instanceof OpError && err.code === ERROR_CODES.SECRET && !err.message.includes('Evil'),
    );
  });

  it('runs ssh with the named agent and a known_hosts file that close() removes', async () => {
    const creds = await openCredentials(spec('git://h/r', 'ssh://git@h:2222/r.git'), credentialAttrs({ 'git.mountsshsock': 'k', 'git.knownsshhosts': '[h]:2222 ssh-ed25519 AAAA' }), grants({}, { k: '/run/a.sock' }), site);
    assert.equal(creds.env['SSH_AUTH_SOCK'], '/run/a.sock');
    const file = /UserKnownHostsFile=([^']+)/.exec(creds.env['GIT_SSH_COMMAND'] ?? '')?.[1] ?? '';
    assert.equal(await readFile(file, 'utf8'), '[h]:2222 ssh-ed25519 AAAA\n');
    assert.match(creds.env['GIT_SSH_COMMAND'] ?? '', /'StrictHostKeyChecking=yes'/);
    await creds.close();
    await assert.rejects(access(file));
  });
});
