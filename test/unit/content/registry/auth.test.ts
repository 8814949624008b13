import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DockerCredentials, defaultDockerConfigPath, parseChallenges } from '../../../../src/content/registry/auth.js';
import { ERROR_CODES, KilnError } from '../../../../src/errors.js';
import type { Logger, LogFn } from '../../../../src/log.js';

/** A logger that keeps its debug messages. */
function recordingLogger(): Logger & { readonly debugs: string[] } {
  const debugs: string[] = [];
  const none: LogFn = () => {};
  return { error: none, warn: none, info: none, trace: none, debugs, debug: (fields, message) => debugs.push(`${message ?? ''} ${JSON.stringify(fields)}`) };
}

describe('parseChallenges', () => {
  it('reads a bearer challenge with quoted params', () => {
    assert.deepEqual(parseChallenges('Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push"'), [
      { scheme: 'bearer', params: { realm: 'https://auth.example.com/token', service: 'registry.example.com', scope: 'repository:a/b:pull,push' } },
    ]);
  });

  it('reads several challenges, unquoted values and escapes', () => {
    assert.deepEqual(parseChallenges('Basic realm="a \\"b\\"", Bearer realm=https://x/t, service=svc'), [
      { scheme: 'basic', params: { realm: 'a "b"' } },
      { scheme: 'bearer', params: { realm: 'https://x/t', service: 'svc' } },
    ]);
    assert.deepEqual(parseChallenges(''), []);
  });
});

describe('DockerCredentials', () => {
  let dir: string;
  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-auth-'));
  });
  after(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  const withConfig = async (name: string, config: unknown, logger = recordingLogger()): Promise<DockerCredentials> => {
    const file = path.join(dir, `${name}.json`);
    await fs.writeFile(file, typeof config === 'string' ? config : JSON.stringify(config));
    return new DockerCredentials(file, logger);
  };

  it('reads `auth` and `username`/`password` entries, keyed by host or URL', async () => {
    const creds = await withConfig('entries', {
      auths: {
        'https://index.docker.io/v1/': { auth: Buffer.from('hub:pw:with:colons').toString('base64') },
        'http://127.0.0.1:5000': { username: 'local', password: 'secret' },
        'ghcr.io': { auth: Buffer.from('gh:tok').toString('base64') },
      },
    });
    assert.deepEqual(await creds.lookup('docker.io'), { username: 'hub', password: 'pw:with:colons' });
    assert.deepEqual(await creds.lookup('127.0.0.1:5000'), { username: 'local', password: 'secret' });
    assert.deepEqual(await creds.lookup('ghcr.io'), { username: 'gh', password: 'tok' });
    assert.equal(await creds.lookup('quay.io'), undefined);
  });

  it('does without a config file', async () => {
    assert.equal(await new DockerCredentials(path.join(dir, 'missing.json'), recordingLogger()).lookup('ghcr.io'), undefined);
  });

  it('reads identity tokens from `auths`', async () => {
    const creds = await withConfig('identity', { auths: { 'ghcr.io': { auth: Buffer.from('gh:pw').toString('base64'), identitytoken: 'refresh' } } });
    assert.deepEqual(await creds.lookup('ghcr.io'), { identityToken: 'refresh' });
  });

  describe('credential helpers', () => {
    let bin: string;
    let savedPath: string | undefined;
    /**
     * Writes docker-credential-NAME: a node script that records the server
     * it was asked for and answers with `answer` (stdout) and `code`.
     */
    const helper = async (name: string, script: string): Promise<string> => {
      const log = path.join(bin, `${name}.log`);
      const body = [
        `#!${process.execPath}`,
        "const fs = require('node:fs');",
        `const server = fs.readFileSync(0, 'utf8');`,
        `fs.appendFileSync(${JSON.stringify(log)}, process.argv[2] + ' ' + server + '\\n');`,
        script,
      ].join('\n');
      await fs.writeFile(path.join(bin, `docker-credential-${name}`), body, { mode: 0o755 });
      return log;
    };
    const asked = async (log: string): Promise<string[]> => (await fs.readFile(log, 'utf8').catch(() => '')).split('\n').filter((l) => l !== '');

    before(async () => {
      bin = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-helpers-'));
      savedPath = process.env['PATH'];
      process.env['PATH'] = `${bin}${path.delimiter}${savedPath ?? ''}`;
    });
    after(async () => {
      process.env['PATH'] = savedPath;
      await fs.rm(bin, { recursive: true, force: true });
    });

    it('asks credHelpers for its host and credsStore for the others, once per host, with the server on stdin', async () => {
      const gh = await helper('gh', `process.stdout.write(JSON.stringify({ ServerURL: server, Username: 'gh-user', Secret: 'gh-secret' }));`);
      const store = await helper('store', `
        if (server === 'quay.io') { process.stdout.write('credentials not found in native keychain'); process.exit(1); }
        process.stdout.write(JSON.stringify({ ServerURL: server, Username: '<token>', Secret: 'refresh-' + server }));`);
      const logger = recordingLogger();
      const creds = await withConfig('helpers', { auths: { 'quay.io': { username: 'q', password: 'from-auths' } }, credHelpers: { 'ghcr.io': 'gh' }, credsStore: 'store' }, logger);
      assert.deepEqual(await creds.lookup('ghcr.io'), { username: 'gh-user', password: 'gh-secret' });
      assert.deepEqual(await creds.lookup('ghcr.io'), { username: 'gh-user', password: 'gh-secret' });
      assert.deepEqual(await creds.lookup('docker.io'), { identityToken: 'refresh-https://index.docker.io/v1/' });
      // Not found in the store: what `auths` holds.
      assert.deepEqual(await creds.lookup('quay.io'), { username: 'q', password: 'from-auths' });
      assert.deepEqual(await asked(gh), ['get ghcr.io']);
      assert.deepEqual(await asked(store), ['get https://index.docker.io/v1/', 'get quay.io']);
      assert.ok(logger.debugs.every((line) => !line.includes('secret') && !line.includes('refresh-')), logger.debugs.join('\n'));
    });

    it('names a helper that is missing or fails, and never shows what a broken one printed', async () => {
      const missing = await withConfig('missing-helper', { credsStore: 'nowhere' });
      await assert.rejects(missing.lookup('ghcr.io'), (err: unknown) => {
        assert.ok(err instanceof KilnError && err.code === ERROR_CODES.REGISTRY);
        assert.match(err.message, /^the credential helper docker-credential-nowhere \(named in .*missing-helper\.json\) is not on PATH/);
        return true;
      });
      await helper('broken', `process.stdout.write('keychain locked'); process.exit(3);`);
      await assert.rejects((await withConfig('broken-helper', { credsStore: 'broken' })).lookup('ghcr.io'), /docker-credential-broken .* failed for ghcr\.io \(exit 3\): keychain locked$/);
      await helper('garbled', `process.stdout.write('password123 {');`);
      await assert.rejects((await withConfig('garbled-helper', { credsStore: 'garbled' })).lookup('ghcr.io'), (err: unknown) => {
        assert.ok(err instanceof Error);
        assert.match(err.message, /answered for ghcr\.io with something that is not JSON$/);
        assert.ok(!err.message.includes('password123'));
        return true;
      });
    });
  });

  it('names the file when it is not JSON', async () => {
    const creds = await withConfig('broken', '{"auths": ');
    await assert.rejects(creds.lookup('ghcr.io'), (err: unknown) => err instanceof KilnError && err.code === ERROR_CODES.REGISTRY && err.message.includes('broken.json'));
  });

  it('defaults to $DOCKER_CONFIG/config.json', () => {
    const saved = process.env['DOCKER_CONFIG'];
    try {
      process.env['DOCKER_CONFIG'] = dir;
      assert.equal(defaultDockerConfigPath(), path.join(dir, 'config.json'));
      delete process.env['DOCKER_CONFIG'];
      assert.equal(defaultDockerConfigPath(), path.join(os.homedir(), '.docker', 'config.json'));
    } finally {
      if (saved !== undefined) process.env['DOCKER_CONFIG'] = saved;
    }
  });
});
