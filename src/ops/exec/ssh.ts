/**
 * SSH agent forwarding for exec ops (`ssh` mounts). `--ssh ID=SOCKET` names
 * a running agent; `--ssh ID=KEYFILE[,KEYFILE...]` has kiln start an agent of
 * its own holding those keys for the build. Each ssh mount gets a socket of
 * its own that kiln listens on, in a private temp dir, proxying every
 * connection to the agent: the mount's uid/gid/mode apply to that socket and
 * never to the user's, and the bind of it is gone with the run. Only the id
 * is part of the op (and so of its cache key); no socket or key ever enters
 * a snapshot.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chmod, chown, mkdtemp, rm, stat } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ERROR_CODES, KilnError, MissingGrantError } from '../../errors.js';
import type { ContainerMount } from '../../executor/types.js';
import type { ExecOp } from '../../llb/types.js';

/** What one `--ssh` flag names. */
export interface SshSource {
  readonly id: string;
  /** Absolute paths: one agent socket, or one or more private key files. */
  readonly paths: readonly string[];
  /**
   * `raw=true`: the one path is a socket forwarded as it is, whatever it
   * speaks (kiln's proxy copies bytes either way; key files are refused).
   */
  readonly raw?: boolean;
}

/** Go's strconv.ParseBool spellings, which buildctl's `raw=` takes. */
const BOOLEANS: ReadonlyMap<string, boolean> = new Map([
  ...['1', 't', 'T', 'TRUE', 'true', 'True'].map((v) => [v, true] as const),
  ...['0', 'f', 'F', 'FALSE', 'false', 'False'].map((v) => [v, false] as const),
]);

/**
 * Parses `--ssh ID[=PATH[,PATH...]][,raw=BOOL]` (buildctl's syntax: a
 * `raw=` entry among the paths is the option, not a path). Without paths the
 * agent is `$SSH_AUTH_SOCK` of `env`. Relative paths are resolved against the
 * current directory.
 */
export function parseSshFlag(spec: string, env: NodeJS.ProcessEnv = process.env): SshSource {
  const eq = spec.indexOf('=');
  const id = eq < 0 ? spec : spec.slice(0, eq);
  if (id === '') throw new KilnError(ERROR_CODES.USAGE, `--ssh "${spec}": the id is empty (expected ID or ID=SOCKET|KEYFILE[,KEYFILE...])`);
  if (eq < 0) {
    const sock = env.SSH_AUTH_SOCK;
    if (sock === undefined || sock === '') {
      throw new KilnError(ERROR_CODES.USAGE, `--ssh ${id}: no agent socket or key file given and SSH_AUTH_SOCK is not set: start an agent (eval "$(ssh-agent)"; ssh-add) or pass --ssh ${id}=KEYFILE`);
    }
    return { id, paths: [resolve(sock)] };
  }
  const paths: string[] = [];
  let raw: boolean | undefined;
  for (const part of spec.slice(eq + 1).split(',')) {
    if (!part.startsWith('raw=')) {
      paths.push(part);
      continue;
    }
    raw = BOOLEANS.get(part.slice('raw='.length));
    if (raw === undefined) throw new KilnError(ERROR_CODES.USAGE, `--ssh "${spec}": raw must be true or false, not "${part.slice('raw='.length)}"`);
  }
  if (paths.includes('')) throw new KilnError(ERROR_CODES.USAGE, `--ssh "${spec}": a path is empty (expected ID=SOCKET or ID=KEYFILE[,KEYFILE...])`);
  if (paths.length === 0) throw new KilnError(ERROR_CODES.USAGE, `--ssh "${spec}": no socket or key file given (expected ID=SOCKET[,raw=true|false] or ID=KEYFILE[,KEYFILE...])`);
  if (raw === true && paths.length !== 1) throw new KilnError(ERROR_CODES.USAGE, `--ssh "${spec}": raw=true forwards exactly one socket, got ${paths.length} paths`);
  return { id, paths: paths.map((p) => resolve(p)), ...(raw === true ? { raw } : {}) };
}

/** The agent socket of each ssh id, ready for ssh mounts. */
export interface SshAgents extends AsyncDisposable {
  /** id → host path of the agent's unix socket. */
  readonly sockets: ReadonlyMap<string, string>;
  /** Stops the agents started for key files and removes their sockets (idempotent). */
  close(): Promise<void>;
}

/**
 * Checks every source and starts an agent for each set of key files. A
 * socket must accept a connection now, so that a dead agent is reported
 * before the build rather than as a failing command inside it.
 */
export async function resolveSshSources(sources: readonly SshSource[]): Promise<SshAgents> {
  const sockets = new Map<string, string>();
  const started: KeyAgent[] = [];
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    for (const agent of started.splice(0).reverse()) await agent.stop();
  };
  try {
    for (const { id, paths, raw } of sources) {
      if (sockets.has(id)) throw new KilnError(ERROR_CODES.USAGE, `--ssh ${id} is given twice`);
      const kinds = await Promise.all(paths.map((path) => pathKind(id, path)));
      if (raw === true && kinds[0] !== 'socket') throw new KilnError(ERROR_CODES.SSH, `--ssh ${id}: raw=true forwards a unix socket, and ${paths[0]} is a file`);
      if (kinds.includes('socket')) {
        const [socket, ...rest] = paths;
        if (socket === undefined || rest.length > 0) throw new KilnError(ERROR_CODES.SSH, `--ssh ${id}: give one agent socket, or key files only (got ${paths.join(', ')})`);
        await probe(id, socket);
        sockets.set(id, socket);
      } else {
        const agent = await startKeyAgent(id, paths);
        started.push(agent);
        sockets.set(id, agent.socket);
      }
    }
  } catch (err) {
    await close();
    throw err;
  }
  return { sockets, close, [Symbol.asyncDispose]: close };
}

async function pathKind(id: string, path: string): Promise<'socket' | 'file'> {
  const info = await stat(path).catch((err: unknown) => {
    throw new KilnError(ERROR_CODES.SSH, `--ssh ${id}: cannot use ${path}: ${reason(err)}`, { cause: err });
  });
  if (info.isSocket()) return 'socket';
  if (info.isFile()) return 'file';
  throw new KilnError(ERROR_CODES.SSH, `--ssh ${id}: ${path} is neither an agent's unix socket nor a private key file`);
}

function probe(id: string, socket: string): Promise<void> {
  return new Promise((done, fail) => {
    const conn = createConnection(socket, () => {
      conn.destroy();
      done();
    });
    conn.once('error', (err) => fail(new KilnError(ERROR_CODES.SSH, `--ssh ${id}: cannot connect to the agent socket ${socket} (${reason(err)}); is the agent running?`, { cause: err })));
  });
}

/** An ssh-agent kiln started, holding the keys of one id. */
interface KeyAgent {
  readonly socket: string;
  stop(): Promise<void>;
}

/**
 * Starts `ssh-agent` on a socket in a new private dir and loads `keys` into
 * it. The agent runs as the child of a `cat` reading a pipe from kiln:
 * ssh-agent gives up once its parent is gone, so even a kiln killed with
 * SIGKILL leaves no agent holding the keys for long (ssh-agent checks every
 * 10 s). stop() ends it at once.
 */
async function startKeyAgent(id: string, keys: readonly string[]): Promise<KeyAgent> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-ssh-agent-'));
  const socket = join(dir, 'agent.sock');
  // The agent forks: the parent execs the command (with SSH_AGENT_PID set),
  // the child is the agent, listening before the command runs.
  const child = spawn('ssh-agent', ['-a', socket, '--', 'sh', '-c', 'echo "$SSH_AGENT_PID"; exec cat'], { stdio: ['pipe', 'pipe', 'pipe'] });
  const exited = new Promise<void>((done) => {
    child.once('close', () => done());
    child.once('error', () => done());
  });
  let agentPid: number | undefined;
  const stop = async (): Promise<void> => {
    if (agentPid !== undefined) {
      try {
        process.kill(agentPid, 'SIGTERM');
      } catch {
        // Gone already (ESRCH): that is what stop() is for.
      }
    }
    agentPid = undefined;
    child.stdin?.end();
    await exited;
    await rm(dir, { recursive: true, force: true });
  };
  try {
    agentPid = await firstLinePid(id, child);
    const added = await outcome(spawn('ssh-add', ['-q', ...keys], {
      // No terminal and no askpass: a key with a passphrase fails rather than prompting in the middle of a build.
      detached: true,
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', SSH_AUTH_SOCK: socket, SSH_ASKPASS_REQUIRE: 'never' },
    }));
    if (added.code !== 0) {
      const detail = /passphrase/i.test(added.stderr) ? 'a key with a passphrase cannot be loaded by kiln' : added.stderr.trim() || `exit code ${String(added.code)}`;
      throw new KilnError(ERROR_CODES.SSH, `--ssh ${id}: ssh-add could not load ${keys.join(', ')}: ${detail}; load the key into your own agent (ssh-add) and pass --ssh ${id}=$SSH_AUTH_SOCK`);
    }
    return { socket, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** The agent's pid, which the command prints once the agent is listening. */
function firstLinePid(id: string, child: ChildProcess): Promise<number> {
  return new Promise((done, fail) => {
    let out = '';
    let err = '';
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
      const line = /^(\d+)\n/.exec(out);
      if (line?.[1] !== undefined) done(Number(line[1]));
    });
    const hint = `install openssh-client, or load the key into your own agent (ssh-add) and pass --ssh ${id}=$SSH_AUTH_SOCK`;
    child.once('error', (e) => fail(new KilnError(ERROR_CODES.SSH, `--ssh ${id}: cannot run ssh-agent to hold the key (${reason(e)}): ${hint}`, { cause: e })));
    child.once('close', (code) => fail(new KilnError(ERROR_CODES.SSH, `--ssh ${id}: ssh-agent did not start: ${err.trim() || `exit code ${String(code)}`}`)));
  });
}

/** How a short command ended, with its stderr. */
function outcome(child: ChildProcess): Promise<{ code: number | null; stderr: string }> {
  return new Promise((done) => {
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.once('error', (err) => done({ code: null, stderr: `cannot run ssh-add (${reason(err)}): install openssh-client` }));
    child.once('close', (code) => done({ code, stderr }));
  });
}

/** The error for a required ssh mount whose id has no agent. */
function missingSshError(opName: string, index: number, dest: string, id: string): MissingGrantError {
  return new MissingGrantError(ERROR_CODES.SSH, `op "${opName}" needs SSH agent "${id}" for the ssh mount at ${dest}, but it was not given`, {
    op: opName,
    field: `ops.${opName}.exec.mounts[${index}].ssh.id`,
    grant: { kind: 'ssh', id, for: 'mount' },
  });
}

/** Refuses, before anything runs, an op with a required ssh mount whose id has no agent. */
export function checkSshMounts(opName: string, exec: ExecOp, sockets: ReadonlyMap<string, string>): void {
  for (const [index, mount] of exec.mounts.entries()) {
    if (mount.type === 'ssh' && !mount.ssh.optional && !sockets.has(mount.ssh.id)) throw missingSshError(opName, index, mount.dest, mount.ssh.id);
  }
}

/** The ssh mounts of one run. */
export interface SshMounts extends AsyncDisposable {
  /** A bind of a proxy socket at each mount's dest. */
  readonly mounts: readonly Extract<ContainerMount, { type: 'bind' }>[];
  /** `SSH_AUTH_SOCK=DEST` when the op has exactly one ssh mount and does not set the variable itself. */
  readonly env: readonly string[];
  /** Stops listening, cuts open connections, removes the sockets (idempotent). */
  close(): Promise<void>;
}

/**
 * Makes a proxy socket for each ssh mount of `exec`, owned and moded as the
 * mount asks. An optional mount whose id has no agent is left out.
 */
export async function prepareSshMounts(opName: string, exec: ExecOp, sockets: ReadonlyMap<string, string>): Promise<SshMounts> {
  const wanted = exec.mounts.flatMap((mount, index) => {
    if (mount.type !== 'ssh') return [];
    const agent = sockets.get(mount.ssh.id);
    if (agent === undefined && mount.ssh.optional) return [];
    if (agent === undefined) throw missingSshError(opName, index, mount.dest, mount.ssh.id);
    return [{ index, dest: mount.dest, agent, ...mount.ssh }];
  });
  if (wanted.length === 0) {
    const none = async (): Promise<void> => {};
    return { mounts: [], env: [], close: none, [Symbol.asyncDispose]: none };
  }

  // Private (0700): between listen() and chmod() the socket has the umask's mode.
  const dir = await mkdtemp(join(tmpdir(), 'kiln-ssh-'));
  const proxies: Proxy[] = [];
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    for (const proxy of proxies.splice(0)) await proxy.close();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const mounts: Extract<ContainerMount, { type: 'bind' }>[] = [];
    for (const want of wanted) {
      const path = join(dir, `${want.index}.sock`);
      proxies.push(await listenProxy(path, want.agent));
      await chown(path, want.uid, want.gid);
      await chmod(path, want.mode);
      mounts.push({ destination: want.dest, type: 'bind', source: path, readonly: true });
    }
    const only = wanted.length === 1 ? wanted[0] : undefined;
    const env = only !== undefined && !exec.meta.env.some((e) => e.startsWith('SSH_AUTH_SOCK=')) ? [`SSH_AUTH_SOCK=${only.dest}`] : [];
    return { mounts, env, close, [Symbol.asyncDispose]: close };
  } catch (err) {
    await close();
    throw err;
  }
}

interface Proxy {
  close(): Promise<void>;
}

/** Listens on `path` and pipes each connection to the agent at `agent`, both ways. */
async function listenProxy(path: string, agent: string): Promise<Proxy> {
  const open = new Set<Socket>();
  const track = (socket: Socket): void => {
    open.add(socket);
    socket.once('close', () => open.delete(socket));
  };
  // Half-open allowed on both legs: a client may shut down its writing side
  // after a request and still read the agent's answer.
  const server: Server = createServer({ allowHalfOpen: true }, (client) => {
    const upstream = createConnection({ path: agent, allowHalfOpen: true });
    track(client);
    track(upstream);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((done, fail) => {
    server.once('error', fail);
    server.listen(path, () => {
      server.off('error', fail);
      done();
    });
  });
  return {
    close: async () => {
      const stopped = new Promise<void>((done) => server.close(() => done()));
      for (const socket of open) socket.destroy();
      await stopped;
    },
  };
}

function reason(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EACCES') return 'permission denied';
  if (code === 'ECONNREFUSED') return 'connection refused';
  return err instanceof Error ? err.message : String(err);
}
