/**
 * A private Debian `docker-registry` (distribution) for tests: filesystem
 * storage in a temp dir, listening on 127.0.0.1 on a free port, optionally
 * behind htpasswd basic auth. `stop()` kills it and removes the temp dir.
 *
 * Its log goes to a file in that dir, never to a pipe: distribution logs a
 * line at level error for every HEAD of a blob it lacks (each new blob of a
 * push), and a pipe nobody drains (a bench that waits in spawnSync) fills up
 * after some 90 lines; the registry then blocks in the write, holding its
 * logger, and answers nothing more.
 *
 * The htpasswd entry is hashed with bcrypt (the only scheme distribution
 * accepts) through Python's `crypt` module, which calls the system's libcrypt.
 */
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { open, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** A running test registry. */
export interface TestRegistry {
  /** `127.0.0.1:PORT`, usable as the domain of a reference (plain HTTP unless started with `tls`). */
  readonly host: string;
  /** The registry's storage root (`docker/registry/v2/...` below it), for tests that tamper with stored content. */
  readonly storage: string;
  /** Kills the registry and removes its files. */
  stop(): Promise<void>;
}

/** Options of a test registry. */
export interface TestRegistryOptions {
  /** Require this user and password (HTTP basic auth). */
  readonly htpasswd?: { readonly user: string; readonly password: string };
  /** Serve HTTPS with this certificate and key (PEM files), instead of plain HTTP. */
  readonly tls?: { readonly cert: string; readonly key: string };
  /** Require bearer tokens from this token server (distribution's token auth; see test/support/token-server.ts). */
  readonly token?: { readonly realm: string; readonly service: string; readonly issuer: string; readonly rootCertBundle: string };
}

/** A port nothing listens on right now (the registry takes it a moment later). */
async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  server.close();
  await once(server, 'close');
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  return address.port;
}

async function bcrypt(password: string): Promise<string> {
  const script = 'import crypt, sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))';
  const { stdout } = await run('python3', ['-W', 'ignore', '-c', script, password], { encoding: 'utf8' });
  return stdout.trim();
}

/** Starts `docker-registry serve` and waits until `GET /v2/` answers. */
export async function startRegistry(options: TestRegistryOptions = {}): Promise<TestRegistry> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kiln-registry-'));
  const storage = path.join(dir, 'storage');
  const host = `127.0.0.1:${await freePort()}`;
  const config = [
    'version: 0.1',
    'log:',
    '  level: error',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${JSON.stringify(storage)}`,
    '  delete:',
    '    enabled: true',
    'http:',
    `  addr: ${host}`,
  ];
  if (options.tls !== undefined) config.push('  tls:', `    certificate: ${JSON.stringify(options.tls.cert)}`, `    key: ${JSON.stringify(options.tls.key)}`);
  if (options.htpasswd !== undefined) {
    const file = path.join(dir, 'htpasswd');
    await writeFile(file, `${options.htpasswd.user}:${await bcrypt(options.htpasswd.password)}\n`);
    config.push('auth:', '  htpasswd:', '    realm: kiln-test', `    path: ${JSON.stringify(file)}`);
  }
  if (options.token !== undefined) {
    const { realm, service, issuer, rootCertBundle } = options.token;
    config.push('auth:', '  token:', ...Object.entries({ realm, service, issuer, rootcertbundle: rootCertBundle }).map(([k, v]) => `    ${k}: ${JSON.stringify(v)}`));
  }
  const configFile = path.join(dir, 'config.yml');
  await writeFile(configFile, `${config.join('\n')}\n`);

  const logFile = path.join(dir, 'registry.log');
  const log = await open(logFile, 'w');
  const child = spawn('docker-registry', ['serve', configFile], { stdio: ['ignore', 'ignore', log.fd] });
  await log.close();
  // A test process that dies without stop() must not leave a registry running.
  const killOnExit = (): void => {
    child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);
  const stop = async (): Promise<void> => {
    process.off('exit', killOnExit);
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      child.kill('SIGKILL');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + 10_000;
  for (;;) {
    // 200, or 401 behind auth: either way the registry is serving.
    const status = await probe(host, options.tls !== undefined);
    if (status === 200 || status === 401) return { host, storage, stop };
    if (child.exitCode !== null || Date.now() > deadline) {
      const said = await readFile(logFile, 'utf8').catch(() => '');
      await stop();
      throw new Error(`docker-registry did not start on ${host}: ${said}`);
    }
    await sleep(25);
  }
}

/** The status `GET /v2/` answers with; 0 when nothing answers. Over TLS, any certificate will do. */
function probe(host: string, tls: boolean): Promise<number> {
  if (!tls) {
    return fetch(`http://${host}/v2/`).then(
      async (res) => {
        await res.body?.cancel();
        return res.status;
      },
      () => 0,
    );
  }
  return new Promise((resolve) => {
    const req = https.get(`https://${host}/v2/`, { rejectUnauthorized: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', () => resolve(0));
  });
}
