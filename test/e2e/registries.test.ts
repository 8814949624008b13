/**
 * Registries as users configure them, through the CLI, against real
 * registries (Debian's docker-registry) on 127.0.0.1: a loopback registry
 * with no flag, a Docker credential helper the test writes, and a mirror in
 * front of an origin, set in kiln.toml.
 */
import assert from 'node:assert/strict';
import { readFile, mkdir, writeFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { startRegistry } from '../support/registry.js';
import { makeTestCertificates } from '../support/test-ca.js';
import { startTokenServer } from '../support/token-server.js';
import { errorLine, kiln, removeDir, tempDir } from './harness.js';

/** A one-file image: /hello holding `text`. */
function helloImage(text: string): string {
  return JSON.stringify({
    version: 1,
    ops: { hello: { file: { actions: [{ input: -1, output: 0, mkfile: { path: '/hello', mode: '0644', data: `${text}\n` } }] } } },
    result: 'hello',
  });
}

/** A definition that is the image `ref`, to be written out with type=local. */
function fromImage(ref: string): string {
  return JSON.stringify({ version: 1, ops: { base: { source: { identifier: `docker-image://${ref}` } } }, result: 'base' });
}

/** Whether `needle` occurs in any file under `dir` (grep, binary files too). */
async function foundUnder(dir: string, needle: string): Promise<boolean> {
  const r = await execa('grep', ['-r', '-a', '-l', '-F', needle, dir], { reject: false });
  return r.exitCode === 0;
}

describe('registries as users configure them', () => {
  let work: string;
  /** The environment every kiln run gets: no user's Docker or kiln config. */
  let env: Record<string, string>;
  let n = 0;
  const root = (): string => join(work, `root-${n++}`);

  before(async () => {
    work = await tempDir('registries');
    await mkdir(join(work, 'docker'));
    await mkdir(join(work, 'xdg'));
    env = { DOCKER_CONFIG: join(work, 'docker'), XDG_CONFIG_HOME: join(work, 'xdg') };
  });
  after(async () => {
    await removeDir(work);
  });

  test('a registry on 127.0.0.1 or localhost needs no --insecure-registry to push and pull', async () => {
    const registry = await startRegistry();
    try {
      const ref = `${registry.host}/kiln/hello:1`;
      const push = await kiln(['build', '-', '--root', root(), '--output', `type=image,name=${ref},push=true`], { input: helloImage('loopback'), env });
      assert.equal(push.exitCode, 0, push.stderr);

      const out = join(work, 'loopback-out');
      const pull = await kiln(['build', '-', '--root', root(), '--output', `type=local,dest=${out}`], { input: fromImage(ref), env });
      assert.equal(pull.exitCode, 0, pull.stderr);
      assert.equal(await readFile(join(out, 'hello'), 'utf8'), 'loopback\n');

      const viaName = join(work, 'localhost-out');
      const port = registry.host.split(':')[1] ?? '';
      const named = await kiln(['build', '-', '--root', root(), '--output', `type=local,dest=${viaName}`], { input: fromImage(`localhost:${port}/kiln/hello:1`), env });
      assert.equal(named.exitCode, 0, named.stderr);
      assert.equal(await readFile(join(viaName, 'hello'), 'utf8'), 'loopback\n');

      // http = false in kiln.toml: HTTPS only, and the error says how to allow plain HTTP.
      const config = join(work, 'https-only.toml');
      await writeFile(config, `[registry."${registry.host}"]\nhttp = false\n`);
      const refused = await kiln(['build', '-', '--root', root(), '--config', config], { input: fromImage(ref), env });
      assert.equal(refused.exitCode, 1);
      assert.match(errorLine(refused.stderr), new RegExp(`TLS failed.*--insecure-registry ${registry.host}`), refused.stderr);
    } finally {
      await registry.stop();
    }
  });

  test('credentials from a Docker credential helper (credHelpers), never written by kiln', async () => {
    const password = 'helper-s3cret-pw';
    const registry = await startRegistry({ htpasswd: { user: 'alice', password } });
    const bin = join(work, 'bin');
    const dockerConfig = join(work, 'docker-helper');
    try {
      await mkdir(bin);
      await mkdir(dockerConfig);
      const asked = join(work, 'helper-asked');
      // The helper protocol: `get`, the server on stdin, JSON on stdout.
      await writeFile(
        join(bin, 'docker-credential-kilntest'),
        [
          '#!/bin/sh',
          'read -r server',
          `echo "$1 $server" >> '${asked}'`,
          `if [ "$server" != '${registry.host}' ]; then echo 'credentials not found in native keychain'; exit 1; fi`,
          `printf '{"ServerURL":"%s","Username":"alice","Secret":"${password}"}' "$server"`,
        ].join('\n'),
        { mode: 0o755 },
      );
      await writeFile(join(dockerConfig, 'config.json'), JSON.stringify({ credHelpers: { [registry.host]: 'kilntest' } }));
      const helperEnv = { ...env, DOCKER_CONFIG: dockerConfig, PATH: `${bin}${delimiter}${process.env['PATH'] ?? ''}` };

      const ref = `${registry.host}/kiln/private:1`;
      const pushRoot = root();
      const push = await kiln(['build', '-', '--root', pushRoot, '--progress', 'plain', '--log-level', 'trace', '--output', `type=image,name=${ref},push=true`], {
        input: helloImage('private'),
        env: helperEnv,
      });
      assert.equal(push.exitCode, 0, push.stderr);
      const out = join(work, 'private-out');
      const pullRoot = root();
      const pull = await kiln(['build', '-', '--root', pullRoot, '--log-level', 'trace', '--output', `type=local,dest=${out}`], { input: fromImage(ref), env: helperEnv });
      assert.equal(pull.exitCode, 0, pull.stderr);
      assert.equal(await readFile(join(out, 'hello'), 'utf8'), 'private\n');
      // Asked once per process and registry.
      assert.deepEqual((await readFile(asked, 'utf8')).trim().split('\n'), [`get ${registry.host}`, `get ${registry.host}`]);

      // The password is nowhere kiln writes or prints: its roots, its logs at trace level.
      for (const text of [push.stderr, push.stdout, pull.stderr, pull.stdout]) assert.ok(!text.includes(password));
      assert.ok(!(await foundUnder(pushRoot, password)) && !(await foundUnder(pullRoot, password)));

      // Without the helper the registry refuses, and the error says where credentials would come from.
      const anonymous = await kiln(['build', '-', '--root', root()], { input: fromImage(ref), env });
      assert.equal(anonymous.exitCode, 1);
      assert.match(anonymous.stderr, /needs credentials: add them for 127\.0\.0\.1:\d+ to .*config\.json/);
    } finally {
      await registry.stop();
    }
  });

  test('an identity token is traded at the token server (refresh-token grant) for the access a push and a pull need', async () => {
    const dir = join(work, 'token');
    await mkdir(dir);
    const certificates = await makeTestCertificates(dir);
    const identityToken = 'kiln-identity-token-0123456789';
    // Both over HTTPS with the test CA: the token server is reached with the registry's `ca`.
    const tokens = await startTokenServer({ certificates, identityToken, https: true });
    const registry = await startRegistry({
      tls: certificates,
      token: { realm: tokens.realm, service: tokens.service, issuer: tokens.issuer, rootCertBundle: certificates.ca },
    });
    try {
      const config = join(dir, 'kiln.toml');
      await writeFile(config, `[registry."${registry.host}"]\nca = ["ca.pem"]\n`);
      const dockerConfig = join(dir, 'docker');
      await mkdir(dockerConfig);
      await writeFile(join(dockerConfig, 'config.json'), JSON.stringify({ auths: { [registry.host]: { identitytoken: identityToken } } }));
      const tokenEnv = { ...env, DOCKER_CONFIG: dockerConfig };
      const ref = `${registry.host}/kiln/token:1`;
      const pushRoot = root();
      const push = await kiln(['build', '-', '--root', pushRoot, '--config', config, '--log-level', 'trace', '--output', `type=image,name=${ref},push=true`], {
        input: helloImage('by token'),
        env: tokenEnv,
      });
      assert.equal(push.exitCode, 0, push.stderr);
      const out = join(work, 'token-out');
      const pull = await kiln(['build', '-', '--root', root(), '--config', config, '--output', `type=local,dest=${out}`], { input: fromImage(ref), env: tokenEnv });
      assert.equal(pull.exitCode, 0, pull.stderr);
      assert.equal(await readFile(join(out, 'hello'), 'utf8'), 'by token\n');

      assert.ok(tokens.requests.length > 0 && tokens.requests.every((r) => r.method === 'POST' && r.grant === 'refresh_token' && r.granted), JSON.stringify(tokens.requests));
      assert.ok(tokens.requests.every((r) => !r.url.includes(identityToken)));
      assert.ok(!push.stderr.includes(identityToken) && !(await foundUnder(pushRoot, identityToken)));

      // A stale identity token: the token server refuses, and the error says what to do.
      await writeFile(join(dockerConfig, 'config.json'), JSON.stringify({ auths: { [registry.host]: { identitytoken: 'stale' } } }));
      const stale = await kiln(['build', '-', '--root', root(), '--config', config], { input: fromImage(ref), env: tokenEnv });
      assert.equal(stale.exitCode, 1);
      assert.match(errorLine(stale.stderr), /refused a token \(401\): the identity token for .* may have expired: log in again$/, stale.stderr);
    } finally {
      await registry.stop();
      await tokens.close();
    }
  });

  test('a mirror in kiln.toml is pulled from first; when it is down, the origin serves', async () => {
    const origin = await startRegistry();
    const mirror = await startRegistry();
    try {
      const config = join(work, 'mirror.toml');
      await writeFile(config, `[registry."${origin.host}"]\nmirrors = ["${mirror.host}"]\n`);
      // Only the mirror has kiln/mirrored; only the origin has kiln/origin-only.
      const seeded = await kiln(['build', '-', '--root', root(), '--output', `type=image,name=${mirror.host}/kiln/mirrored:1,push=true`], { input: helloImage('from the mirror'), env });
      assert.equal(seeded.exitCode, 0, seeded.stderr);
      const seededOrigin = await kiln(['build', '-', '--root', root(), '--output', `type=image,name=${origin.host}/kiln/origin-only:1,push=true`], {
        input: helloImage('from the origin'),
        env,
      });
      assert.equal(seededOrigin.exitCode, 0, seededOrigin.stderr);

      const viaMirror = join(work, 'via-mirror');
      const pulled = await kiln(['build', '-', '--root', root(), '--config', config, '--output', `type=local,dest=${viaMirror}`], {
        input: fromImage(`${origin.host}/kiln/mirrored:1`),
        env,
      });
      assert.equal(pulled.exitCode, 0, pulled.stderr);
      assert.equal(await readFile(join(viaMirror, 'hello'), 'utf8'), 'from the mirror\n');

      // The mirror lacks it: the origin has it.
      const passedOver = join(work, 'passed-over');
      const fromOrigin = await kiln(['build', '-', '--root', root(), '--config', config, '--output', `type=local,dest=${passedOver}`], {
        input: fromImage(`${origin.host}/kiln/origin-only:1`),
        env,
      });
      assert.equal(fromOrigin.exitCode, 0, fromOrigin.stderr);
      assert.equal(await readFile(join(passedOver, 'hello'), 'utf8'), 'from the origin\n');

      await mirror.stop();
      const fallback = join(work, 'fallback');
      const down = await kiln(['build', '-', '--root', root(), '--config', config, '--log-level', 'debug', '--output', `type=local,dest=${fallback}`], {
        input: fromImage(`${origin.host}/kiln/origin-only:1`),
        env,
      });
      assert.equal(down.exitCode, 0, down.stderr);
      assert.equal(await readFile(join(fallback, 'hello'), 'utf8'), 'from the origin\n');
      const lines = down.stderr.split('\n').filter((l) => l.includes('registry mirror failed'));
      assert.ok(lines.length > 0, down.stderr);
      assert.ok(lines.every((l) => l.includes(mirror.host)), lines.join('\n'));
    } finally {
      await mirror.stop();
      await origin.stop();
    }
  });

  test('a mirror given as HOST/PATH (a proxy project, as buildkitd.toml allows) is asked for PATH/REPOSITORY', async () => {
    const origin = await startRegistry();
    const mirror = await startRegistry();
    try {
      const config = join(work, 'mirror-path.toml');
      await writeFile(config, `[registry."${origin.host}"]\nmirrors = ["${mirror.host}/hub-proxy/"]\n`);
      // The mirror keeps the origin's kiln/app under hub-proxy/; the origin has no kiln/app at all.
      const seeded = await kiln(['build', '-', '--root', root(), '--output', `type=image,name=${mirror.host}/hub-proxy/kiln/app:1,push=true`], {
        input: helloImage('from the proxy project'),
        env,
      });
      assert.equal(seeded.exitCode, 0, seeded.stderr);
      const out = join(work, 'via-mirror-path');
      const pulled = await kiln(['build', '-', '--root', root(), '--config', config, '--output', `type=local,dest=${out}`], { input: fromImage(`${origin.host}/kiln/app:1`), env });
      assert.equal(pulled.exitCode, 0, pulled.stderr);
      assert.equal(await readFile(join(out, 'hello'), 'utf8'), 'from the proxy project\n');

      await writeFile(config, `[registry."${origin.host}"]\nmirrors = ["${mirror.host}/Hub Proxy"]\n`);
      const bad = await kiln(['build', '-', '--root', root(), '--config', config, '--output', `type=local,dest=${out}`], { input: fromImage(`${origin.host}/kiln/app:1`), env });
      assert.equal(bad.exitCode, 2);
      assert.equal(errorLine(bad.stderr), `error: ${config}: registry."${origin.host}".mirrors: "${mirror.host}/Hub Proxy": the path after the host must be repository path components (lowercase letters, digits, ".", "_", "-")`);
    } finally {
      await mirror.stop();
      await origin.stop();
    }
  });

  test('an HTTPS registry with its own CA (ca in kiln.toml, relative to the file), or unverified (insecure = true)', async () => {
    const dir = join(work, 'tls');
    await mkdir(dir);
    const certs = await makeTestCertificates(dir);
    const registry = await startRegistry({ tls: certs });
    try {
      const trusted = join(dir, 'kiln.toml');
      await writeFile(trusted, `[registry."${registry.host}"]\nca = ["ca.pem"]\n`);
      const ref = `${registry.host}/kiln/tls:1`;
      const push = await kiln(['build', '-', '--root', root(), '--config', trusted, '--output', `type=image,name=${ref},push=true`], { input: helloImage('over TLS'), env });
      assert.equal(push.exitCode, 0, push.stderr);
      const out = join(work, 'tls-out');
      const pull = await kiln(['build', '-', '--root', root(), '--config', trusted, '--output', `type=local,dest=${out}`], { input: fromImage(ref), env });
      assert.equal(pull.exitCode, 0, pull.stderr);
      assert.equal(await readFile(join(out, 'hello'), 'utf8'), 'over TLS\n');

      // Without the CA: the certificate is refused (no fallback to plain HTTP), and the error says what to set.
      const untrusted = await kiln(['build', '-', '--root', root()], { input: fromImage(ref), env });
      assert.equal(untrusted.exitCode, 1);
      const hint = `set ca = \\["CA.pem"\\] under \\[registry."${registry.host}"\\] in kiln.toml`;
      assert.match(errorLine(untrusted.stderr), new RegExp(`certificate.*; to trust its CA, ${hint}$`), untrusted.stderr);

      const unverified = join(dir, 'insecure.toml');
      await writeFile(unverified, `[registry."${registry.host}"]\ninsecure = true\n`);
      const anyway = await kiln(['build', '-', '--root', root(), '--config', unverified], { input: fromImage(ref), env });
      assert.equal(anyway.exitCode, 0, anyway.stderr);
    } finally {
      await registry.stop();
    }
  });

  test('a config file with an unknown key stops every command with one line naming the file and key', async () => {
    const config = join(work, 'bad.toml');
    await writeFile(config, '[registry."docker.io"]\nmirror = ["127.0.0.1:1"]\n');
    const r = await kiln(['build', '-', '--root', root(), '--config', config], { input: helloImage('x'), env });
    assert.equal(r.exitCode, 2);
    assert.equal(r.stderr.trim(), `error: ${config}: registry."docker.io".mirror: unknown key (a registry takes mirrors, http, insecure, ca)`);
    const du = await kiln(['du', '--root', root(), '--config', join(work, 'absent.toml')], { env });
    assert.equal(du.exitCode, 2);
    assert.equal(du.stderr.trim(), `error: cannot read the config file ${join(work, 'absent.toml')}: no such file`);
  });
});

