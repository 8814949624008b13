/** Secret files on a tmpfs, secretEnv, and the masking of secrets in process output. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { lstat, mkdir, mkdtemp, readFile, rm, statfs, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { KilnError, MissingGrantError } from '../../../src/errors.js';
import type { ExecOp } from '../../../src/llb/types.js';
import { processOutput, SECRET_MASK } from '../../../src/ops/exec/output.js';
import { secretEnv, secretUses, writeSecretFiles } from '../../../src/ops/exec/secrets.js';
import type { LogEvent, ProgressEvent } from '../../../src/progress/types.js';

const TMPFS_MAGIC = 0x01021994;
const SECRETS_MODULE = new URL('../../../src/ops/exec/secrets.js', import.meta.url).href;

/**
 * Runs `setup` then a node script that writes one secret file, in a private
 * mount namespace (so /dev/shm can be replaced there), and returns what the
 * script printed: the file's filesystem type and whether its directory was a
 * mount point before and after remove().
 */
async function inMountNamespace(setup: string): Promise<{ type: number; mounted: boolean; mountedAfter: boolean; existsAfter: boolean }> {
  const script = `
    const { writeSecretFiles } = await import(${JSON.stringify(SECRETS_MODULE)});
    const fs = await import('node:fs/promises');
    const mountpoints = async () => (await fs.readFile('/proc/self/mountinfo', 'utf8')).split('\\n').map((l) => l.split(' ')[4]);
    const files = await writeSecretFiles([{ dest: '/a', value: Buffer.from('v'), uid: 0, gid: 0, mode: 0o400 }]);
    const dir = files.mounts[0].source.replace(/\\/[^/]*$/, '');
    const type = (await fs.statfs(files.mounts[0].source)).type;
    const mounted = (await mountpoints()).includes(dir);
    await files.remove();
    const mountedAfter = (await mountpoints()).includes(dir);
    const existsAfter = await fs.lstat(dir).then(() => true, () => false);
    console.log(JSON.stringify({ type, mounted, mountedAfter, existsAfter }));
  `;
  const { stdout } = await promisify(execFile)('unshare', ['--mount', '--propagation', 'private', 'sh', '-ec', `${setup}\nexec "$0" --input-type=module -e "$1"`, process.execPath, script]);
  return JSON.parse(stdout) as { type: number; mounted: boolean; mountedAfter: boolean; existsAfter: boolean };
}

/** An exec op with one secret mount and two secretEnv entries (one optional). */
const EXEC: ExecOp = {
  meta: { args: ['true'], env: [], cwd: '/', user: '', hostname: '', extraHosts: [], ulimit: [], cgroupParent: '', validExitCodes: [0] },
  mounts: [
    { type: 'bind', dest: '/', input: 0, selector: '', output: -1, readonly: true },
    { type: 'secret', dest: '/run/secrets/npmrc', secret: { id: 'npmrc', uid: 0, gid: 0, mode: 0o400, optional: false } },
  ],
  network: 'sandbox',
  security: 'sandbox',
  secretEnv: [
    { id: 'token', name: 'TOKEN', optional: false },
    { id: 'maybe', name: 'MAYBE', optional: true },
  ],
};

describe('secret files', () => {
  it('are written to a private tmpfs directory with the mount\'s owner and mode, bound read-only, and removed', async () => {
    const files = await writeSecretFiles([
      { dest: '/a', value: Buffer.from('first'), uid: 1234, gid: 5678, mode: 0o440 },
      { dest: '/b', value: Buffer.from('second\n'), uid: 0, gid: 0, mode: 0o400 },
    ]);
    const [a, b] = files.mounts;
    assert.ok(a !== undefined && b !== undefined);
    assert.deepEqual([a.destination, a.type, a.readonly], ['/a', 'bind', true]);
    assert.equal(b.destination, '/b');
    assert.equal((await statfs(a.source)).type, TMPFS_MAGIC, 'on a tmpfs, never on disk');
    assert.equal(await readFile(a.source, 'utf8'), 'first');
    assert.equal(await readFile(b.source, 'utf8'), 'second\n');
    const info = await lstat(a.source);
    assert.deepEqual([info.uid, info.gid, info.mode & 0o7777], [1234, 5678, 0o440]);
    const dir = await lstat(join(a.source, '..'));
    assert.equal(dir.mode & 0o777, 0o700, 'the directory is private');
    await files.remove();
    await files.remove();
    await assert.rejects(lstat(join(a.source, '..')), { code: 'ENOENT' });
  });

  it('removes what a dead kiln process left behind', async () => {
    const probe = await writeSecretFiles([{ dest: '/x', value: Buffer.from('x'), uid: 0, gid: 0, mode: 0o400 }]);
    const parent = join(probe.mounts[0]?.source ?? '', '..', '..');
    await probe.remove();
    // Above the kernel's largest pid_max: no such process can exist.
    const stale = join(parent, '4194304-1-stale');
    await mkdir(stale, { recursive: true });
    await writeFile(join(stale, '0'), 'left over');
    const files = await writeSecretFiles([{ dest: '/x', value: Buffer.from('x'), uid: 0, gid: 0, mode: 0o400 }]);
    await files.remove();
    await assert.rejects(lstat(stale), { code: 'ENOENT' });
  });

  it('mounts a private tmpfs for them when /dev/shm is not a tmpfs, and unmounts it after', async () => {
    const disk = await mkdtemp(join(tmpdir(), 'kiln-not-shm-'));
    try {
      const r = await inMountNamespace(`mount --bind ${disk} /dev/shm`);
      assert.deepEqual(r, { type: TMPFS_MAGIC, mounted: true, mountedAfter: false, existsAfter: false });
    } finally {
      await rm(disk, { recursive: true, force: true });
    }
  });

  it('refuses a secrets directory in /dev/shm that others can read', async () => {
    await assert.rejects(inMountNamespace('mount -t tmpfs tmpfs /dev/shm; mkdir -m 0777 /dev/shm/kiln-secrets'), /kiln-secrets is not a private directory of this user/);
  });
});

describe('secret uses and secretEnv', () => {
  it('lists every use with its JSON path', () => {
    assert.deepEqual(
      secretUses('build', EXEC).map((u) => [u.id, u.optional, u.field, u.what]),
      [
        ['npmrc', false, 'ops.build.exec.mounts[1].secret.id', 'the secret mount at /run/secrets/npmrc'],
        ['token', false, 'ops.build.exec.secretEnv[0].id', 'secretEnv TOKEN'],
        ['maybe', true, 'ops.build.exec.secretEnv[1].id', 'secretEnv MAYBE'],
      ],
    );
  });

  it('adds NAME=value, leaves an optional missing one unset, and names the flag for a required one', () => {
    assert.deepEqual(secretEnv('build', EXEC, new Map([['token', Buffer.from('t0k3n')]])), ['TOKEN=t0k3n']);
    assert.deepEqual(secretEnv('build', EXEC, new Map([['token', Buffer.from('a')], ['maybe', Buffer.from('b')]])), ['TOKEN=a', 'MAYBE=b']);
    assert.throws(
      () => secretEnv('build', EXEC, new Map()),
      (err: unknown) =>
        err instanceof KilnError &&
        err.code === 'E_SECRET' &&
        err.field === 'ops.build.exec.secretEnv[0].id' &&
        err.message === 'op "build" needs secret "token" for secretEnv TOKEN, but it was not given' &&
        err instanceof MissingGrantError &&
        err.grant.kind === 'secret' &&
        err.grant.id === 'token',
    );
    assert.throws(() => secretEnv('build', EXEC, new Map([['token', Buffer.from('a\0b')]])), /NUL byte/);
  });
});

describe('masking secrets in process output', () => {
  const SECRET = Buffer.from('s3cr3t-v4lue-0123456789abcdef');
  const capture = (secrets: readonly Uint8Array[]) => {
    const events: ProgressEvent[] = [];
    const output = processOutput('vertex', { emit: (e) => events.push(e) }, secrets);
    const logged = (fd: 1 | 2) =>
      events
        .filter((e): e is LogEvent => e.type === 'log' && e.stream === fd)
        .map((e) => e.data)
        .join('');
    return { output, logged };
  };
  const write = (stream: NodeJS.WritableStream, data: string | Buffer) => new Promise<void>((resolve, reject) => stream.write(data, (err) => (err ? reject(err) : resolve())));

  it('masks a secret even when it is split across writes, and in the failure tail', async () => {
    const { output, logged } = capture([SECRET]);
    const text = `before ${SECRET.toString()} middle ${SECRET.toString()}\nafter\n`;
    // One byte per write: the worst case for a secret split across chunks.
    for (const byte of Buffer.from(text)) await write(output.stdout, Buffer.from([byte]));
    output.flush();
    assert.equal(logged(1), `before ${SECRET_MASK} middle ${SECRET_MASK}\nafter\n`);
    assert.deepEqual(output.tail(), [`before ${SECRET_MASK} middle ${SECRET_MASK}`, 'after']);
  });

  it('masks each line of a multi-line secret, but not lines shorter than 4 bytes', async () => {
    const { output, logged } = capture([Buffer.from('line-one\r\nline-two\nab\n')]);
    await write(output.stderr, 'x line-two y ab line-one\n');
    await write(output.stderr, 'whole: line-one\r\nline-two\nab\n!');
    output.flush();
    assert.equal(logged(2), `x ${SECRET_MASK} y ab ${SECRET_MASK}\nwhole: ${SECRET_MASK}\n!`);
  });

  it('keeps the line break after a masked value that ends with one (a secret file printed with cat)', async () => {
    for (const eol of ['\n', '\r\n']) {
      const { output, logged } = capture([Buffer.from(`hunter2-token${eol}`)]);
      await write(output.stdout, `hunter2-token${eol}next line\n`);
      output.flush();
      assert.equal(logged(1), `${SECRET_MASK}${eol}next line\n`);
    }
  });

  it('holds back nothing without secrets, and keeps a UTF-8 character split across writes whole', async () => {
    const { output, logged } = capture([]);
    const euro = Buffer.from('€');
    await write(output.stdout, euro.subarray(0, 1));
    await write(output.stdout, euro.subarray(1));
    assert.equal(logged(1), '€', 'sent without waiting for flush');
    output.flush();
    assert.equal(logged(1), '€');
  });
});
