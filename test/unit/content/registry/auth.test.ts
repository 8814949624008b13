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

  it('does without a config file, and says so when a credential helper is named', async () => {
    assert.equal(await new DockerCredentials(path.join(dir, 'missing.json'), recordingLogger()).lookup('ghcr.io'), undefined);
    const logger = recordingLogger();
    const creds = await withConfig('helpers', { auths: { 'ghcr.io': {} }, credHelpers: { 'ghcr.io': 'gh' }, credsStore: 'desktop' }, logger);
    assert.equal(await creds.lookup('ghcr.io'), undefined);
    assert.equal(await creds.lookup('quay.io'), undefined);
    assert.equal(logger.debugs.length, 2);
    assert.match(logger.debugs[0] ?? '', /not supported.*"helper":"gh"/);
    assert.match(logger.debugs[1] ?? '', /"helper":"desktop"/);
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
