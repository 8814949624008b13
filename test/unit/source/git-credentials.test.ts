import assert from 'node:assert/strict';
import { access, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ERROR_CODES, MissingGrantError, OpError } from '../../../src/errors.js';
import { type GitSourceSpec, isGitSpecProblem, parseGitSource } from '../../../src/llb/git-identifier.js';
import { checkCredentials, credentialAttrs, missingSecrets, openCredentials } from '../../../src/source/git/credentials.js';

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
  // The CA variables of the machine running the tests would add GIT_SSL_CAINFO everywhere.
  const CA_VARS = ['NODE_EXTRA_CA_CERTS', 'SSL_CERT_FILE'];
  const savedCa = CA_VARS.map((name) => process.env[name]);
  before(() => CA_VARS.forEach((name) => delete process.env[name]));
  after(() => CA_VARS.forEach((name, i) => (savedCa[i] === undefined ? delete process.env[name] : (process.env[name] = savedCa[i]))));

  it('refuses an ssh agent the build was not given, as a grant the CLI can name; auth secrets are optional, as in BuildKit', () => {
    assert.throws(
      () => checkCredentials(spec('git://h/r', 'git@h:r.git'), credentialAttrs({}), grants(), site),
      (err: unknown) => err instanceof MissingGrantError && err.code === ERROR_CODES.SSH && err.grant.kind === 'ssh' && err.grant.id === 'default',
    );
    checkCredentials(spec('git://h/r', 'git@h:r.git'), credentialAttrs({ 'git.mountsshsock': 'k' }), grants({}, { k: '/run/agent.sock' }), site);
    // What BuildKit's llb.Git writes on every git source.
    const buildkit = credentialAttrs({ 'git.authtokensecret': 'GIT_AUTH_TOKEN', 'git.authheadersecret': 'GIT_AUTH_HEADER' });
    checkCredentials(spec('git+https://h/r'), buildkit, grants(), site);
    assert.deepEqual(missingSecrets(spec('git+https://h/r'), buildkit, grants().secrets), ['git.authheadersecret names secret "GIT_AUTH_HEADER"', 'git.authtokensecret names secret "GIT_AUTH_TOKEN"']);
    assert.deepEqual(missingSecrets(spec('git+https://h/r'), buildkit, grants({ 'GIT_AUTH_TOKEN.h': 't' }).secrets), []);
    assert.deepEqual(missingSecrets(spec('git://h/r'), buildkit, grants().secrets), [], 'no headers over git://');
  });

  it('puts the Authorization header in the environment, scoped to the remote origin', async () => {
    await using token = await openCredentials(spec('git+https://h/r.git'), credentialAttrs({ 'git.authtokensecret': 'tok' }), grants({ tok: 'abc\n' }), site);
    assert.deepEqual(token.env, {
      GIT_CONFIG_COUNT: '1',
      GIT_CONFIG_KEY_0: 'http.https://h/.extraHeader',
      GIT_CONFIG_VALUE_0: `Authorization: Basic ${Buffer.from('x-access-token:abc').toString('base64')}`,
    });
    await using header = await openCredentials(spec('git+https://h/r.git'), credentialAttrs({ 'git.authheadersecret': 'h' }), grants({ h: 'Bearer xyz' }), site);
    assert.equal(header.env['GIT_CONFIG_VALUE_0'], 'Authorization: Bearer xyz');
    await using userinfo = await openCredentials(spec('git+https://me:pw@h/r.git'), credentialAttrs({}), grants(), site);
    assert.equal(userinfo.env['GIT_CONFIG_VALUE_0'], `Authorization: Basic ${Buffer.from('me:pw').toString('base64')}`);
    await using none = await openCredentials(spec('git+https://h/r.git'), credentialAttrs({ 'git.authtokensecret': 'GIT_AUTH_TOKEN' }), grants(), site);
    assert.equal(none.env['GIT_CONFIG_COUNT'], undefined, 'a secret not given: no header');
  });

  it('prefers ID.HOST to ID, and the header secret to the token, as BuildKit does', async () => {
    const attrs = credentialAttrs({ 'git.authtokensecret': 'GIT_AUTH_TOKEN', 'git.authheadersecret': 'GIT_AUTH_HEADER' });
    await using scoped = await openCredentials(spec('git+https://h:8443/r.git'), attrs, grants({ GIT_AUTH_HEADER: 'Bearer any', 'GIT_AUTH_TOKEN.h:8443': 'mine' }), site);
    assert.equal(scoped.env['GIT_CONFIG_VALUE_0'], `Authorization: Basic ${Buffer.from('x-access-token:mine').toString('base64')}`);
    assert.equal(scoped.env['GIT_CONFIG_KEY_0'], 'http.https://h:8443/.extraHeader');
    await using plain = await openCredentials(spec('git+https://h/r.git'), attrs, grants({ GIT_AUTH_HEADER: 'Bearer any', GIT_AUTH_TOKEN: 't' }), site);
    assert.equal(plain.env['GIT_CONFIG_VALUE_0'], 'Authorization: Bearer any');
  });

  it('lets the submodules of a file:// remote use file://, and only those', async () => {
    await using file = await openCredentials(spec('git+file:///srv/r'), credentialAttrs({}), grants(), site);
    assert.deepEqual([file.env['GIT_CONFIG_KEY_0'], file.env['GIT_CONFIG_VALUE_0']], ['protocol.file.allow', 'always']);
    await using http = await openCredentials(spec('git+https://h/r.git'), credentialAttrs({}), grants(), site);
    assert.equal(http.env['GIT_CONFIG_COUNT'], undefined);
  });

  it('gives git the CAs of NODE_EXTRA_CA_CERTS (besides the system ones) in a file close() removes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'git-ca-'));
    try {
      const pem = '-----BEGIN CERTIFICATE-----\nTESTCA\n-----END CERTIFICATE-----\n';
      await writeFile(join(dir, 'ca.pem'), pem);
      process.env['NODE_EXTRA_CA_CERTS'] = join(dir, 'ca.pem');
      const creds = await openCredentials(spec('git+https://h/r.git'), credentialAttrs({}), grants(), site);
      const bundle = creds.env['GIT_SSL_CAINFO'] ?? '';
      assert.ok((await readFile(bundle, 'utf8')).includes(pem));
      await creds.close();
      await assert.rejects(access(bundle));
    } finally {
      delete process.env['NODE_EXTRA_CA_CERTS'];
      await rm(dir, { recursive: true, force: true });
    }
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
