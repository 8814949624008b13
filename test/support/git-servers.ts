/**
 * git servers for tests and benches, all on 127.0.0.1 and started by the
 * caller: `git daemon` (git://), smart HTTP through `git http-backend` as a
 * CGI behind a node http server (which counts requests and can demand an
 * Authorization value), and `sshd` with generated host and user keys and an
 * `ssh-agent` holding the user key. Plus helpers that make repositories.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingMessage, type RequestListener, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createConnection, createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Runs git in `cwd` with a fixed identity and no user config; resolves with stdout. */
export async function gitIn(cwd: string, args: readonly string[]): Promise<string> {
  const env = { ...process.env, GIT_CONFIG_GLOBAL: '/dev/null', GIT_CONFIG_NOSYSTEM: '1', GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@t', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@t' };
  const { stdout } = await run('git', [...args], { cwd, env, maxBuffer: 64 * 1024 * 1024 });
  return stdout.trim();
}

/** A working repository at `dir` (branch `main`), served as `dir` itself (git daemon and http-backend serve non-bare repos). */
export async function initRepo(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await gitIn(dir, ['init', '--quiet', '--initial-branch=main']);
  // Served over git://, http and ssh from this very directory.
  await gitIn(dir, ['config', 'daemon.uploadpack', 'true']);
}

/** Writes `files` (path → content) into the repository and commits them; resolves with the commit id. */
export async function commitFiles(dir: string, files: Readonly<Record<string, string>>, message = 'change'): Promise<string> {
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(dir, path)), { recursive: true });
    await writeFile(join(dir, path), content);
  }
  await gitIn(dir, ['add', '--all']);
  await gitIn(dir, ['commit', '--quiet', '--allow-empty', '-m', message]);
  return gitIn(dir, ['rev-parse', 'HEAD']);
}

/** A free TCP port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

/** Resolves once something accepts connections on 127.0.0.1:port. */
async function waitForPort(port: number, child: ChildProcess, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const socket = createConnection({ host: '127.0.0.1', port }, () => {
        socket.end();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`${what} did not listen on ${port}`);
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  await exited;
}

/** A running server: its base URL and how to stop it. */
export interface GitServer extends AsyncDisposable {
  /** `git://127.0.0.1:PORT`, `http://127.0.0.1:PORT`, `ssh://root@127.0.0.1:PORT`. */
  readonly url: string;
  close(): Promise<void>;
}

/** `git daemon` serving every repository under `base` (as `git://127.0.0.1:PORT/NAME`). */
export async function startGitDaemon(base: string): Promise<GitServer> {
  const port = await freePort();
  const child = spawn('git', ['daemon', '--reuseaddr', '--listen=127.0.0.1', `--port=${port}`, `--base-path=${base}`, '--export-all', base], { stdio: 'ignore' });
  await waitForPort(port, child, 'git daemon');
  const close = () => stop(child);
  return { url: `git://127.0.0.1:${port}`, close, [Symbol.asyncDispose]: close };
}

/** What the smart HTTP server saw. */
export interface HttpGitServer extends GitServer {
  /** Every request's method, path and Authorization header. */
  readonly requests: { method: string; path: string; authorization: string | undefined }[];
}

/**
 * Smart HTTP: a node server that runs `git http-backend` (CGI) for each
 * request, serving the repositories under `base`. With `authorization`,
 * requests without exactly that header get 401; with `tls` (PEM key and
 * certificate), it serves HTTPS.
 */
export async function startHttpGitServer(
  base: string,
  options: { readonly authorization?: string; readonly tls?: { readonly key: string; readonly cert: string } } = {},
): Promise<HttpGitServer> {
  const requests: HttpGitServer['requests'] = [];
  const listener: RequestListener = (req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    requests.push({ method: req.method ?? '', path: url.pathname, authorization: req.headers.authorization });
    if (options.authorization !== undefined && req.headers.authorization !== options.authorization) {
      res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="git"' }).end();
      return;
    }
    serveCgi(base, url, req, res);
  };
  const server: Server = options.tls === undefined ? createHttpServer(listener) : createHttpsServer(options.tls, listener);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  const close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  return { url: `${options.tls === undefined ? 'http' : 'https'}://127.0.0.1:${address.port}`, requests, close, [Symbol.asyncDispose]: close };
}

function serveCgi(base: string, url: URL, req: IncomingMessage, res: import('node:http').ServerResponse): void {
  const env: Record<string, string> = {
    PATH: process.env['PATH'] ?? '/usr/bin:/bin',
    GIT_PROJECT_ROOT: base,
    GIT_HTTP_EXPORT_ALL: '1',
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    REQUEST_METHOD: req.method ?? 'GET',
    PATH_INFO: decodeURIComponent(url.pathname),
    QUERY_STRING: url.search.slice(1),
    CONTENT_TYPE: req.headers['content-type'] ?? '',
    REMOTE_ADDR: '127.0.0.1',
  };
  if (req.headers['git-protocol'] !== undefined) env['GIT_PROTOCOL'] = String(req.headers['git-protocol']);
  if (req.headers['content-encoding'] !== undefined) env['HTTP_CONTENT_ENCODING'] = String(req.headers['content-encoding']);
  const child = spawn('git', ['http-backend'], { env, stdio: ['pipe', 'pipe', 'inherit'] });
  req.pipe(child.stdin);
  let head = Buffer.alloc(0);
  let sentHead = false;
  child.stdout.on('data', (chunk: Buffer) => {
    if (sentHead) {
      res.write(chunk);
      return;
    }
    head = Buffer.concat([head, chunk]);
    const end = head.indexOf('\r\n\r\n');
    if (end < 0) return;
    let status = 200;
    for (const line of head.subarray(0, end).toString('latin1').split('\r\n')) {
      const colon = line.indexOf(':');
      const name = line.slice(0, colon).trim();
      const value = line.slice(colon + 1).trim();
      if (name.toLowerCase() === 'status') status = Number.parseInt(value, 10);
      else res.setHeader(name, value);
    }
    res.writeHead(status);
    sentHead = true;
    res.write(head.subarray(end + 4));
  });
  child.stdout.on('end', () => res.end());
}

/** sshd on 127.0.0.1 letting `root` in with a generated key that an ssh-agent holds. */
export interface SshGitServer extends GitServer {
  /** The agent's socket (pass as `--ssh ID=SOCKET`). */
  readonly agentSocket: string;
  /** known_hosts line(s) for the server (`[127.0.0.1]:PORT ssh-ed25519 ...`). */
  readonly knownHosts: string;
}

/** Starts sshd -D with its own config, keys and agent under `dir`. */
export async function startSshGitServer(dir: string): Promise<SshGitServer> {
  await mkdir(dir, { recursive: true });
  const hostKey = join(dir, 'host_ed25519');
  const userKey = join(dir, 'user_ed25519');
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey]);
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'kiln-test', '-f', userKey]);
  await writeFile(join(dir, 'authorized_keys'), await readFile(`${userKey}.pub`));
  const port = await freePort();
  const config = join(dir, 'sshd_config');
  await writeFile(
    config,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${hostKey}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PermitRootLogin prohibit-password',
      'UsePAM no',
      'StrictModes no',
      'AllowAgentForwarding no',
      'AllowTcpForwarding no',
      'X11Forwarding no',
      '',
    ].join('\n'),
  );
  // sshd needs its privilege separation directory.
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
  const sshd = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  sshd.stderr?.setEncoding('utf8').on('data', (d: string) => (log += d));
  try {
    await waitForPort(port, sshd, `sshd (${log})`);
  } catch (err) {
    await stop(sshd);
    throw err;
  }
  const agentSocket = join(dir, 'agent.sock');
  const { stdout } = await run('ssh-agent', ['-s', '-a', agentSocket]);
  const agentPid = Number(/SSH_AGENT_PID=(\d+)/.exec(stdout)?.[1]);
  await run('ssh-add', ['-q', userKey], { env: { ...process.env, SSH_AUTH_SOCK: agentSocket } });
  const hostPub = (await readFile(`${hostKey}.pub`, 'utf8')).trim().split(' ').slice(0, 2).join(' ');
  const close = async (): Promise<void> => {
    if (agentPid > 0) process.kill(agentPid, 'SIGTERM');
    await stop(sshd);
    await rm(agentSocket, { force: true });
  };
  return { url: `ssh://root@127.0.0.1:${port}`, agentSocket, knownHosts: `[127.0.0.1]:${port} ${hostPub}\n`, close, [Symbol.asyncDispose]: close };
}
