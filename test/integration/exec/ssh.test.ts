/** `--ssh` parsing, agent sources (sockets and key files), and the proxy sockets of ssh mounts. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { lstat, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { createConnection, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { KilnError, MissingGrantError } from '../../../src/errors.js';
import type { ExecMount, ExecOp, SshExecMount } from '../../../src/llb/types.js';
import { checkSshMounts, parseSshFlag, prepareSshMounts, resolveSshSources } from '../../../src/ops/exec/ssh.js';

const run = promisify(execFile);

const ROOT: ExecMount = { type: 'bind', dest: '/', input: 0, selector: '', output: -1, readonly: true };

function sshMount(dest: string, ssh: Partial<SshExecMount['ssh']> = {}): ExecMount {
  return { type: 'ssh', dest, ssh: { id: 'default', uid: 0, gid: 0, mode: 0o600, optional: false, ...ssh } };
}

function execOp(mounts: readonly ExecMount[], env: readonly string[] = []): ExecOp {
  return {
    meta: { args: ['true'], env, cwd: '/', user: '', hostname: '', extraHosts: [], ulimit: [], cgroupParent: '', validExitCodes: [0] },
    mounts: [ROOT, ...mounts],
    network: 'sandbox',
    security: 'sandbox',
    secretEnv: [],
  };
}

const exists = (path: string) => lstat(path).then(() => true, () => false);

/** Sends `data` through the unix socket at `path`, shuts down writing, and returns all that came back. */
function roundTrip(path: string, data: Buffer): Promise<Buffer> {
  return new Promise((done, fail) => {
    const chunks: Buffer[] = [];
    const conn = createConnection(path, () => conn.end(data));
    conn.on('data', (c: Buffer) => chunks.push(c));
    conn.on('end', () => done(Buffer.concat(chunks)));
    conn.on('error', fail);
  });
}

/** The pids of live (not zombie) ssh-agent processes whose command line mentions `socket`. */
async function agentsOn(socket: string): Promise<number[]> {
  const pids: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const [cmdline, stat] = await Promise.all([readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => ''), readFile(`/proc/${name}/stat`, 'utf8').catch(() => '')]);
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    if (cmdline.startsWith('ssh-agent\0') && cmdline.includes(socket) && state !== 'Z') pids.push(Number(name));
  }
  return pids;
}

/** Whether the error is a KilnError with `code` whose message matches `message`. */
const kilnError = (code: string, message: RegExp) => (err: unknown) => err instanceof KilnError && err.code === code && message.test(err.message);

describe('parseSshFlag', () => {
  it('takes ID alone as $SSH_AUTH_SOCK, ID=PATH as one path, ID=A,B as several; paths made absolute', () => {
    assert.deepEqual(parseSshFlag('default', { SSH_AUTH_SOCK: '/run/agent.sock' }), { id: 'default', paths: ['/run/agent.sock'] });
    assert.deepEqual(parseSshFlag('gh=/keys/a'), { id: 'gh', paths: ['/keys/a'] });
    assert.deepEqual(parseSshFlag('gh=/keys/a,rel/b'), { id: 'gh', paths: ['/keys/a', resolve('rel/b')] });
  });

  it('refuses an empty id, an empty path, and ID alone without SSH_AUTH_SOCK', () => {
    assert.throws(() => parseSshFlag('=/a'), kilnError('E_USAGE', /^--ssh "=\/a": the id is empty/));
    assert.throws(() => parseSshFlag('x='), kilnError('E_USAGE', /^--ssh "x=": a path is empty/));
    assert.throws(() => parseSshFlag('x=/a,,/b'), kilnError('E_USAGE', /a path is empty/));
    assert.throws(() => parseSshFlag('default', {}), kilnError('E_USAGE', /^--ssh default: no agent socket or key file given and SSH_AUTH_SOCK is not set/));
  });

  it('reads raw=BOOL as the option, not a path (buildctl: ID=SOCKET,raw=true|false)', () => {
    assert.deepEqual(parseSshFlag('id=/run/a.sock,raw=false'), { id: 'id', paths: ['/run/a.sock'] });
    assert.deepEqual(parseSshFlag('gh=/run/a.sock,raw=true'), { id: 'gh', paths: ['/run/a.sock'], raw: true });
    assert.deepEqual(parseSshFlag('gh=raw=1,/run/a.sock'), { id: 'gh', paths: ['/run/a.sock'], raw: true });
    assert.throws(() => parseSshFlag('gh=/a,raw=maybe'), kilnError('E_USAGE', /^--ssh "gh=\/a,raw=maybe": raw must be true or false, not "maybe"$/));
    assert.throws(() => parseSshFlag('gh=/a,/b,raw=true'), kilnError('E_USAGE', /raw=true forwards exactly one socket, got 2 paths/));
    assert.throws(() => parseSshFlag('gh=raw=false'), kilnError('E_USAGE', /no socket or key file given/));
  });
});

describe('ssh agents', () => {
  let work: string;
  /** A fake agent: echoes what it reads, then closes. */
  let echo: Server;
  let echoPath: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'kiln-ssh-test-'));
    echoPath = join(work, 'echo.sock');
    echo = createServer({ allowHalfOpen: true }, (conn) => conn.pipe(conn));
    await new Promise<void>((done) => echo.listen(echoPath, done));
  });
  after(async () => {
    await new Promise<void>((done) => echo.close(() => done()));
    await rm(work, { recursive: true, force: true });
  });

  it('uses a socket as it is, after checking it accepts connections', async () => {
    await using agents = await resolveSshSources([{ id: 'default', paths: [echoPath] }]);
    assert.deepEqual([...agents.sockets], [['default', echoPath]]);
  });

  it('refuses a missing path, two sockets, a directory and a repeated id', async () => {
    await assert.rejects(resolveSshSources([{ id: 'a', paths: [join(work, 'nope')] }]), kilnError('E_SSH', /^--ssh a: cannot use .*nope: no such file$/));
    await assert.rejects(resolveSshSources([{ id: 'b', paths: [echoPath, echoPath] }]), kilnError('E_SSH', /^--ssh b: give one agent socket, or key files only/));
    await assert.rejects(resolveSshSources([{ id: 'c', paths: [work] }]), kilnError('E_SSH', /is neither an agent's unix socket nor a private key file$/));
    await assert.rejects(
      resolveSshSources([
        { id: 'd', paths: [echoPath] },
        { id: 'd', paths: [echoPath] },
      ]),
      kilnError('E_USAGE', /^--ssh d is given twice$/),
    );
  });

  it('refuses a socket nobody listens on, naming it', async () => {
    const path = join(work, 'stale.sock');
    // A socket file left behind by a process that died (the server does not unlink it here).
    const { stdout } = await run(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => { console.log('up'); process.exit(0); })`]);
    assert.equal(stdout.trim(), 'up');
    await assert.rejects(resolveSshSources([{ id: 'x', paths: [path] }]), kilnError('E_SSH', /^--ssh x: cannot connect to the agent socket .*stale\.sock \(connection refused\); is the agent running\?$/));
  });

  it('starts an ssh-agent holding the key files, and stops it and removes its socket on close', async () => {
    const key = join(work, 'id_ed25519');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'kiln-unit-key', '-f', key]);
    const agents = await resolveSshSources([{ id: 'k', paths: [key] }]);
    const socket = agents.sockets.get('k');
    assert.ok(socket !== undefined);
    assert.ok((await lstat(socket)).isSocket());
    const { stdout } = await run('ssh-add', ['-L'], { env: { SSH_AUTH_SOCK: socket } });
    assert.equal(stdout.trim(), (await readFile(`${key}.pub`, 'utf8')).trim(), 'the agent holds exactly the key');
    assert.equal((await agentsOn(socket)).length, 1);
    await agents.close();
    await agents.close();
    assert.equal(await exists(dirname(socket)), false, 'socket dir removed');
    assert.deepEqual(await agentsOn(socket), [], 'agent stopped');
  });

  it('refuses a key with a passphrase, leaving no agent behind', async () => {
    const key = join(work, 'locked');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', 'secret-pass', '-f', key]);
    const before = new Set(await readdir(tmpdir()));
    await assert.rejects(
      resolveSshSources([{ id: 'p', paths: [key] }]),
      kilnError('E_SSH', /^--ssh p: ssh-add could not load .*locked: a key with a passphrase cannot be loaded by kiln; load the key into your own agent \(ssh-add\) and pass --ssh p=\$SSH_AUTH_SOCK$/),
    );
    const left = (await readdir(tmpdir())).filter((n) => n.startsWith('kiln-ssh-agent-') && !before.has(n));
    assert.deepEqual(left, []);
    assert.deepEqual(await agentsOn(join(tmpdir(), 'kiln-ssh-agent-')), []);
  });

  it('closes the agents already started when a later source fails', async () => {
    const key = join(work, 'first');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    const before = new Set(await readdir(tmpdir()));
    await assert.rejects(resolveSshSources([{ id: 'ok', paths: [key] }, { id: 'bad', paths: [join(work, 'missing')] }]), kilnError('E_SSH', /^--ssh bad:/));
    assert.deepEqual((await readdir(tmpdir())).filter((n) => n.startsWith('kiln-ssh-agent-') && !before.has(n)), []);
  });

  it('checkSshMounts refuses a required mount whose id was not given, naming op, mount and flag; optional ones pass', () => {
    const exec = execOp([sshMount('/run/ssh', { optional: true, id: 'other' }), sshMount('/run/agent', { id: 'gh' })]);
    assert.throws(
      () => checkSshMounts('fetch', exec, new Map()),
      (err: unknown) =>
        err instanceof KilnError &&
        err.code === 'E_SSH' &&
        err.op === 'fetch' &&
        err.field === 'ops.fetch.exec.mounts[2].ssh.id' &&
        err.message === 'op "fetch" needs SSH agent "gh" for the ssh mount at /run/agent, but it was not given' &&
        err instanceof MissingGrantError &&
        err.grant.kind === 'ssh' &&
        err.grant.id === 'gh',
    );
    checkSshMounts('fetch', exec, new Map([['gh', echoPath]]));
  });

  it('prepares a proxy socket per mount with the owner and mode asked for, forwarding bytes both ways, gone after close', async () => {
    const sockets = new Map([['default', echoPath]]);
    const ssh = await prepareSshMounts('op', execOp([sshMount('/run/ssh.sock', { uid: 1234, gid: 5678, mode: 0o640 })]), sockets);
    assert.equal(ssh.mounts.length, 1);
    const [mount] = ssh.mounts;
    assert.ok(mount !== undefined);
    assert.equal(mount.destination, '/run/ssh.sock');
    assert.equal(mount.type, 'bind');
    assert.equal(mount.readonly, true);
    assert.deepEqual(ssh.env, ['SSH_AUTH_SOCK=/run/ssh.sock']);
    const info = await lstat(mount.source);
    assert.ok(info.isSocket());
    assert.equal(info.uid, 1234);
    assert.equal(info.gid, 5678);
    assert.equal(info.mode & 0o7777, 0o640);
    assert.equal((await lstat(dirname(mount.source))).mode & 0o777, 0o700, 'private dir');

    // Answers come back after the client shut down its writing side (the request/reply pattern of `nc`).
    const payload = Buffer.from([0, 0, 0, 1, 11, ...Buffer.from('hello agent')]);
    assert.deepEqual(await roundTrip(mount.source, payload), payload);
    const big = Buffer.alloc(1 << 20, 7);
    assert.deepEqual(await roundTrip(mount.source, big), big);

    // A connection still open when the run ends is cut.
    const open = createConnection(mount.source);
    await new Promise<void>((done) => open.once('connect', () => done()));
    const ended = new Promise<void>((done) => open.once('close', () => done()));
    await ssh.close();
    await ended;
    await ssh.close();
    assert.equal(await exists(dirname(mount.source)), false, 'socket dir removed');
  });

  it('sets SSH_AUTH_SOCK only for exactly one mount the op does not override, and skips optional mounts without an agent', async () => {
    const sockets = new Map([['default', echoPath]]);
    const two = await prepareSshMounts('op', execOp([sshMount('/a.sock'), sshMount('/b.sock')]), sockets);
    assert.deepEqual(two.env, []);
    assert.deepEqual(
      two.mounts.map((m) => m.destination),
      ['/a.sock', '/b.sock'],
    );
    await two.close();

    const own = await prepareSshMounts('op', execOp([sshMount('/a.sock')], ['SSH_AUTH_SOCK=/mine']), sockets);
    assert.deepEqual(own.env, []);
    await own.close();

    const skipped = await prepareSshMounts('op', execOp([sshMount('/a.sock', { id: 'absent', optional: true })]), sockets);
    assert.deepEqual([skipped.mounts, skipped.env], [[], []]);
    await assert.rejects(prepareSshMounts('op', execOp([sshMount('/a.sock', { id: 'absent' })]), sockets), kilnError('E_SSH', /^op "op" needs SSH agent "absent"/));
  });

  it('a proxy whose agent went away closes the connection instead of hanging', async () => {
    const gone = join(work, 'gone.sock');
    const ssh = await prepareSshMounts('op', execOp([sshMount('/a.sock')]), new Map([['default', gone]]));
    try {
      const [mount] = ssh.mounts;
      assert.ok(mount !== undefined);
      assert.deepEqual(await roundTrip(mount.source, Buffer.from('x')).catch(() => Buffer.alloc(0)), Buffer.alloc(0));
    } finally {
      await ssh.close();
    }
  });
});
