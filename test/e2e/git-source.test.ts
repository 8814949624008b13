/**
 * git sources end to end through the CLI, against servers this test starts
 * on 127.0.0.1: `git daemon` (git://), smart HTTP (`git http-backend` behind
 * a node server that demands an Authorization value) and `sshd` with a key
 * an ssh-agent holds (`--ssh`). Covered: branch, annotated tag and commit
 * refs; subdir; keepgitdir; fixed mtimes; a new commit reruns only the ops
 * that depend on the source; recursive submodules; credentials from
 * `--secret`/`--ssh` reach the server and appear nowhere in kiln's root,
 * progress or output; a missing secret or agent is refused before anything
 * runs; two processes fetching one remote into one root.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { commitFiles, gitIn, initRepo, startGitDaemon, startHttpGitServer, startSshGitServer, type GitServer, type SshGitServer } from '../support/git-servers.js';
import { makeTestCertificates } from '../support/test-ca.js';
import { kiln, removeDir, startKiln, tempDir, verticesByName } from './harness.js';
import { busyboxOps, shStep } from './workers.js';

const run = promisify(execFile);

/** The pids of the processes whose argument list `match` accepts. */
async function processesWhoseArgs(match: (args: readonly string[]) => boolean): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline !== '' && match(cmdline.replace(/\0$/, '').split('\0'))) found.push(Number(entry));
  }
  return found;
}
/** 1980-01-01T00:00:00Z: the mtime of every checked-out entry. */
const FIXED_MTIME = 315532800;

describe('git sources', () => {
  let work: string;
  let srv: string;
  let daemon: GitServer;
  let ssh: SshGitServer;
  const commits: Record<string, string> = {};
  let n = 0;

  before(async () => {
    work = await tempDir('git');
    srv = join(work, 'srv');
    const app = join(srv, 'app');
    await initRepo(app);
    commits['first'] = await commitFiles(app, { 'README.md': 'first\n', 'docs/guide.txt': 'guide v1\n', 'bin/tool': '#!/bin/sh\n' }, 'first');
    await gitIn(app, ['tag', '-a', 'v1', '-m', 'release 1']);
    commits['second'] = await commitFiles(app, { 'README.md': 'second\n' }, 'second');
    daemon = await startGitDaemon(srv);
    ssh = await startSshGitServer(join(work, 'ssh'));
  });
  after(async () => {
    await daemon.close();
    await ssh.close();
    await removeDir(work);
  });

  /** Builds `ops` (result `result`) into a fresh output dir; returns the run and the dir. */
  const build = async (ops: Record<string, unknown>, result: string, args: readonly string[] = [], root = join(work, 'root'), env?: Readonly<Record<string, string>>) => {
    const file = join(work, `def${n}.json`);
    const out = join(work, `out${n++}`);
    await writeFile(file, JSON.stringify({ version: 1, ops, result }));
    const r = await kiln(['build', '--root', root, '--progress', 'rawjson', '-o', `type=local,dest=${out}`, ...args, file], env === undefined ? {} : { env });
    return { ...r, out };
  };
  /** A new directory under the test's work dir, removed with it. */
  const workDir = async (name: string): Promise<string> => {
    const dir = join(work, name);
    await mkdir(dir);
    return dir;
  };
  const gitOp = (identifier: string, attrs: Record<string, string> = {}, name = 'repo') => ({
    source: { identifier, attrs },
    metadata: { description: { 'llb.customname': name } },
  });

  test('checks out a branch, an annotated tag and a full commit over git://', async () => {
    for (const [ref, readme] of [
      ['main', 'second\n'],
      ['v1', 'first\n'],
      [commits['first'] ?? '', 'first\n'],
    ] as const) {
      const r = await build({ g: gitOp(`${daemon.url}/app#${ref}`) }, 'g');
      assert.equal(r.exitCode, 0, r.stderr);
      assert.equal(await readFile(join(r.out, 'README.md'), 'utf8'), readme, ref);
      assert.deepEqual((await readdir(r.out)).sort(), ['README.md', 'bin', 'docs'], `${ref}: no .git`);
      for (const entry of ['README.md', 'docs', 'docs/guide.txt']) assert.equal((await stat(join(r.out, entry))).mtimeMs / 1000, FIXED_MTIME, `${ref} ${entry} mtime`);
    }
  });

  test('an unknown ref fails with one line naming the remote', async () => {
    const r = await build({ g: gitOp(`${daemon.url}/app#nope`) }, 'g', ['--progress', 'plain']);
    assert.notEqual(r.exitCode, 0);
    assert.match(r.stderr, /no branch or tag "nope" on the remote/);
    // A short commit id is not resolved (BuildKit does not either): the message says what to give.
    const short = await build({ g: gitOp(`${daemon.url}/app#${(commits['first'] ?? '').slice(0, 7)}`) }, 'g', ['--progress', 'plain']);
    assert.notEqual(short.exitCode, 0);
    assert.match(short.stderr, /^error: op "g": git source git:\/\/127\.0\.0\.1:\d+\/app: no branch or tag "[0-9a-f]{7}" on the remote \(a commit must be given as its full id\)$/m);
    const unknown = await build({ g: gitOp(`${daemon.url}/app#${'0123456789'.repeat(4)}`) }, 'g', ['--progress', 'plain']);
    assert.notEqual(unknown.exitCode, 0);
    assert.match(unknown.stderr, /^error: op "g": git source git:\/\/127\.0\.0\.1:\d+\/app: no commit 0{1}123456789\d{30} on the remote \(not in the history of any branch or tag\)$/m);
  });

  test('takes only SUBDIR, and keeps .git with keepgitdir', async () => {
    const sub = await build({ g: gitOp(`${daemon.url}/app#v1:docs`) }, 'g');
    assert.equal(sub.exitCode, 0, sub.stderr);
    assert.deepEqual(await readdir(sub.out), ['guide.txt']);

    const kept = await build({ g: gitOp(`${daemon.url}/app#main`, { 'git.keepgitdir': 'true' }) }, 'g');
    assert.equal(kept.exitCode, 0, kept.stderr);
    assert.equal(await gitIn(kept.out, ['rev-parse', 'HEAD']), commits['second']);
    assert.equal(await gitIn(kept.out, ['rev-parse', '--abbrev-ref', 'HEAD']), 'main');
    assert.equal(await gitIn(kept.out, ['status', '--porcelain']), '', 'the checkout is clean');
    assert.equal(await gitIn(kept.out, ['remote', 'get-url', 'origin']), `${daemon.url}/app`);

    // A tag asked for is in the kept .git, annotated as on the remote: git describe names it.
    const tagged = await build({ g: gitOp(`${daemon.url}/app#v1`, { 'git.keepgitdir': 'true' }) }, 'g');
    assert.equal(tagged.exitCode, 0, tagged.stderr);
    assert.equal(await gitIn(tagged.out, ['describe']), 'v1');
    assert.equal(await gitIn(tagged.out, ['cat-file', '-t', 'refs/tags/v1']), 'tag');
    assert.equal(await gitIn(tagged.out, ['rev-parse', 'HEAD']), commits['first']);

    const missing = await build({ g: gitOp(`${daemon.url}/app#main:nothing/here`) }, 'g', ['--progress', 'plain']);
    assert.notEqual(missing.exitCode, 0);
    assert.match(missing.stderr, /"nothing\/here" is not a directory at commit/);
  });

  test('a new commit on the branch reruns only what depends on it', async () => {
    const repo = join(srv, 'moving');
    await initRepo(repo);
    await commitFiles(repo, { 'v.txt': 'one\n' });
    const ops = {
      ...(await busyboxOps()),
      g: gitOp(`${daemon.url}/moving#main`),
      uses: { ...shStep('cat /src/v.txt > /out/v.txt', [{ dest: '/src', input: 1, output: -1, readonly: true }]), inputs: ['base', 'g'], metadata: { description: { 'llb.customname': 'uses' } } },
      other: { ...shStep('echo independent > /out/other.txt'), metadata: { description: { 'llb.customname': 'other' } } },
      all: { inputs: ['uses', 'other'], merge: { inputs: [0, 1] }, metadata: { description: { 'llb.customname': 'all' } } },
    };
    const root = join(work, 'root-moving');
    const tools = ['--local', 'tools=/bin'];
    const first = await build(ops, 'all', tools, root);
    assert.equal(first.exitCode, 0, first.stderr);
    assert.equal(await readFile(join(first.out, 'v.txt'), 'utf8'), 'one\n');

    const same = await build(ops, 'all', tools, root);
    assert.equal(same.exitCode, 0, same.stderr);
    for (const name of ['repo', 'uses', 'other', 'all']) assert.equal(verticesByName(same.stderr).get(name)?.cached, true, `${name} cached when the branch did not move`);

    await commitFiles(repo, { 'v.txt': 'two\n' });
    const moved = await build(ops, 'all', tools, root);
    assert.equal(moved.exitCode, 0, moved.stderr);
    const byName = verticesByName(moved.stderr);
    assert.equal(byName.get('repo')?.cached, false);
    assert.equal(byName.get('uses')?.cached, false, 'the op reading the checkout reruns');
    assert.equal(byName.get('other')?.cached, true, 'the op not reading it does not');
    assert.equal(await readFile(join(moved.out, 'v.txt'), 'utf8'), 'two\n');
  });

  test('checks submodules out recursively, without their .git', async () => {
    const inner = join(srv, 'inner');
    const lib = join(srv, 'lib');
    const top = join(srv, 'top');
    for (const dir of [inner, lib, top]) await initRepo(dir);
    await commitFiles(inner, { 'deep.txt': 'deep\n' });
    await commitFiles(lib, { 'lib.txt': 'lib\n' });
    await gitIn(lib, ['submodule', '--quiet', 'add', `${daemon.url}/inner`, 'inner']);
    await commitFiles(lib, {}, 'add inner');
    await commitFiles(top, { 'top.txt': 'top\n' });
    await gitIn(top, ['submodule', '--quiet', 'add', `${daemon.url}/lib`, 'vendor/lib']);
    await commitFiles(top, {}, 'add lib');

    const r = await build({ g: gitOp(`${daemon.url}/top#main`) }, 'g');
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(await readFile(join(r.out, 'vendor/lib/lib.txt'), 'utf8'), 'lib\n');
    assert.equal(await readFile(join(r.out, 'vendor/lib/inner/deep.txt'), 'utf8'), 'deep\n');
    const { stdout } = await run('find', [r.out, '-name', '.git']);
    assert.equal(stdout, '', 'no .git anywhere');
    assert.equal((await stat(join(r.out, 'vendor/lib/inner/deep.txt'))).mtimeMs / 1000, FIXED_MTIME);

    // A subdir holding a submodule: the submodule's files are there too.
    const sub = await build({ g: gitOp(`${daemon.url}/top#main:vendor`) }, 'g');
    assert.equal(sub.exitCode, 0, sub.stderr);
    assert.deepEqual(await readdir(sub.out), ['lib']);
    assert.equal(await readFile(join(sub.out, 'lib/inner/deep.txt'), 'utf8'), 'deep\n');
    assert.equal((await run('find', [sub.out, '-name', '.git'])).stdout, '', 'no .git anywhere');
  });

  test('git.skipsubmodules leaves the submodules out, plain and with keepgitdir; the two checkouts are cached apart', async () => {
    // The repositories of the submodule test above.
    const skip = await build({ g: gitOp(`${daemon.url}/top#main`, { 'git.skipsubmodules': 'true' }) }, 'g');
    assert.equal(skip.exitCode, 0, skip.stderr);
    assert.equal(await readFile(join(skip.out, 'top.txt'), 'utf8'), 'top\n');
    assert.ok((await readFile(join(skip.out, '.gitmodules'), 'utf8')).includes('vendor/lib'));
    assert.deepEqual(await readdir(join(skip.out, 'vendor/lib')).catch(() => []), [], 'the submodule is not checked out');
    assert.equal(verticesByName(skip.stderr).get('repo')?.cached, false, 'not the cached checkout with submodules');

    const kept = await build({ g: gitOp(`${daemon.url}/top#main`, { 'git.skipsubmodules': 'true', 'git.keepgitdir': 'true' }) }, 'g');
    assert.equal(kept.exitCode, 0, kept.stderr);
    assert.deepEqual(await readdir(join(kept.out, 'vendor/lib')).catch(() => []), [], 'the submodule is not checked out');
    assert.equal((await run('git', ['-C', kept.out, 'submodule', 'status'])).stdout.trim().startsWith('-'), true, 'the kept repository has it uninitialised');

    const whole = await build({ g: gitOp(`${daemon.url}/top#main`, { 'git.skipsubmodules': 'false' }) }, 'g');
    assert.equal(whole.exitCode, 0, whole.stderr);
    assert.equal(await readFile(join(whole.out, 'vendor/lib/lib.txt'), 'utf8'), 'lib\n');
  });

  test('git.checksum: the ref must be at that commit (full id or prefix); a full id is the key without asking the remote', async () => {
    const repo = join(srv, 'pinned');
    await initRepo(repo);
    const first = await commitFiles(repo, { 'v.txt': 'one\n' });
    const root = join(work, 'root-checksum');
    const pinned = (checksum: string) => ({ g: gitOp(`${daemon.url}/pinned#main`, { 'git.checksum': checksum }) });

    const full = await build(pinned(first), 'g', [], root);
    assert.equal(full.exitCode, 0, full.stderr);
    assert.equal(await readFile(join(full.out, 'v.txt'), 'utf8'), 'one\n');
    const prefix = await build(pinned(first.slice(0, 10).toUpperCase()), 'g', [], root);
    assert.equal(prefix.exitCode, 0, prefix.stderr);
    assert.equal(verticesByName(prefix.stderr).get('repo')?.cached, true);

    const second = await commitFiles(repo, { 'v.txt': 'two\n' });
    // The branch moved: a full id is still answered from the cache (no ls-remote), as in BuildKit.
    const cached = await build(pinned(first), 'g', ['--progress', 'plain'], root);
    assert.equal(cached.exitCode, 0, cached.stderr);
    assert.doesNotMatch(cached.stderr, /resolving/);
    // A prefix needs the remote, and the branch is no longer there.
    const moved = await build(pinned(first.slice(0, 10)), 'g', ['--progress', 'plain'], root);
    assert.equal(moved.exitCode, 1);
    assert.match(moved.stderr, new RegExp(`^error: op "g": git source ${daemon.url}/pinned: main is at commit ${second}, but git.checksum expects ${first.slice(0, 10)}$`, 'm'));
    // Nothing cached for the full id on another root: the checkout checks it.
    const fresh = await build(pinned(first), 'g', ['--progress', 'plain'], join(work, 'root-checksum2'));
    assert.equal(fresh.exitCode, 1);
    assert.match(fresh.stderr, new RegExp(`main is at commit ${second}, but git.checksum expects ${first}$`, 'm'));

    const bad = await build(pinned('v1.0'), 'g', ['--progress', 'plain'], root);
    assert.equal(bad.exitCode, 2);
    assert.match(bad.stderr, /ops\.g\.source\.attrs\["git\.checksum"\]: must be a commit id or a prefix of one, in hex, got "v1\.0"/);
  });

  /** Asserts `secret` is in no file under `dir` and in neither output stream. */
  const assertNowhere = async (secret: string, dir: string, r: { stdout: string; stderr: string }) => {
    assert.ok(!r.stdout.includes(secret) && !r.stderr.includes(secret), 'not in the output');
    const grep = await run('grep', ['-rlF', '--', secret, dir]).catch((err: { code?: number; stdout?: string }) => ({ stdout: err.code === 1 ? '' : `grep failed: ${String(err.code)}` }));
    assert.equal(grep.stdout, '', `not in a file of kiln's root`);
  };

  test('authenticates over smart HTTP with a secret, and the secret stays out of the root and the output', async () => {
    const cases = [
      { attr: 'git.authheadersecret', secret: 'Bearer hdr-s3cret-4711', expect: (s: string) => s },
      { attr: 'git.authtokensecret', secret: 'tok-s3cret-0815', expect: (s: string) => `Basic ${Buffer.from(`x-access-token:${s}`).toString('base64')}` },
    ];
    for (const { attr, secret, expect } of cases) {
      await using server = await startHttpGitServer(srv, { authorization: expect(secret) });
      const secretFile = join(work, `secret${n}`);
      await writeFile(secretFile, secret);
      const root = join(work, `root-http${n}`);
      const op = gitOp(`git://127.0.0.1/app#main`, { 'git.fullurl': `${server.url}/app`, [attr]: 'gitcred' });

      // Optional, as in BuildKit: without it the request goes out bare, and the refusal names the secret.
      const refused = await build({ g: op }, 'g', ['--progress', 'plain'], root);
      assert.notEqual(refused.exitCode, 0);
      assert.match(refused.stderr, new RegExp(`^error: op "g": git source ${server.url}/app: resolving main failed: fatal: Authentication failed for .*\\(${attr.replace('.', '\\.')} names secret "gitcred", which the build was not given\\)$`, 'm'));

      const r = await build({ g: op }, 'g', ['--secret', `id=gitcred,src=${secretFile}`], root);
      assert.equal(r.exitCode, 0, r.stderr);
      assert.equal(await readFile(join(r.out, 'README.md'), 'utf8'), 'second\n');
      assert.ok(server.requests.some((q) => q.authorization === expect(secret)), 'the server saw the credential');
      await assertNowhere(secret, root, r);
    }
  });

  test('builds what BuildKit writes: GIT_AUTH_TOKEN and GIT_AUTH_HEADER named on every source, given or not; ID.HOST first', async () => {
    const buildkitAttrs = { 'git.authtokensecret': 'GIT_AUTH_TOKEN', 'git.authheadersecret': 'GIT_AUTH_HEADER' };
    await using open = await startHttpGitServer(srv);
    const root = join(work, 'root-buildkit-auth');
    const pub = await build({ g: gitOp('git://127.0.0.1/app#v1', { 'git.fullurl': `${open.url}/app`, ...buildkitAttrs }) }, 'g', [], root);
    assert.equal(pub.exitCode, 0, pub.stderr);
    assert.equal(await readFile(join(pub.out, 'README.md'), 'utf8'), 'first\n');

    const token = 'scoped-t0ken-9';
    await using closed = await startHttpGitServer(srv, { authorization: `Basic ${Buffer.from(`x-access-token:${token}`).toString('base64')}` });
    const secretFile = join(work, 'scoped-token');
    await writeFile(secretFile, token);
    const host = new URL(closed.url).host;
    const r = await build({ g: gitOp('git://127.0.0.1/app#main', { 'git.fullurl': `${closed.url}/app`, ...buildkitAttrs }) }, 'g', ['--secret', `id=GIT_AUTH_TOKEN.${host},src=${secretFile}`], root);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(await readFile(join(r.out, 'README.md'), 'utf8'), 'second\n');
    await assertNowhere(token, root, r);
  });

  test('the credential of a remote reaches its submodules on the same server (relative URLs)', async () => {
    const token = 'sub-t0ken-31';
    await using server = await startHttpGitServer(srv, { authorization: `Basic ${Buffer.from(`x-access-token:${token}`).toString('base64')}` });
    for (const dir of ['rel-inner', 'rel-top'].map((d) => join(srv, d))) await initRepo(dir);
    await commitFiles(join(srv, 'rel-inner'), { 'inner.txt': 'inner\n' });
    await commitFiles(join(srv, 'rel-top'), { 'top.txt': 'top\n' });
    await gitIn(join(srv, 'rel-top'), ['-c', 'protocol.file.allow=always', 'submodule', '--quiet', 'add', '../rel-inner', 'sub']);
    await commitFiles(join(srv, 'rel-top'), {}, 'add sub');
    const secretFile = join(work, 'sub-token');
    await writeFile(secretFile, token);
    const root = join(work, 'root-rel-sub');
    const r = await build({ g: gitOp('git://127.0.0.1/rel-top#main', { 'git.fullurl': `${server.url}/rel-top`, 'git.authtokensecret': 't' }) }, 'g', ['--secret', `id=t,src=${secretFile}`], root);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(await readFile(join(r.out, 'sub/inner.txt'), 'utf8'), 'inner\n');
    assert.ok(server.requests.some((q) => q.path.startsWith('/rel-inner/') && q.authorization !== undefined), 'the submodule fetch was authenticated');
    await assertNowhere(token, root, r);

    // git+file://: the submodules (file:// too) are the user's files as well.
    const local = await build({ g: gitOp(`git+file://${join(srv, 'rel-top')}#main`) }, 'g', [], root);
    assert.equal(local.exitCode, 0, local.stderr);
    assert.equal(await readFile(join(local.out, 'sub/inner.txt'), 'utf8'), 'inner\n');
  });

  test('git+https:// to a server with a private CA, trusted through NODE_EXTRA_CA_CERTS as HTTP sources are', async () => {
    const certs = await makeTestCertificates(await workDir('git-ca'));
    await using server = await startHttpGitServer(srv, { tls: { key: await readFile(certs.key, 'utf8'), cert: await readFile(certs.cert, 'utf8') } });
    const identifier = `git+${server.url}/app#v1`;
    const root = join(work, 'root-https');
    const untrusted = await build({ g: gitOp(identifier) }, 'g', ['--progress', 'plain'], root, { NODE_EXTRA_CA_CERTS: '' });
    assert.notEqual(untrusted.exitCode, 0);
    assert.match(untrusted.stderr, /certificate verification failed.*\(a private CA can be trusted with NODE_EXTRA_CA_CERTS=FILE\)$/m);
    const r = await build({ g: gitOp(identifier) }, 'g', [], root, { NODE_EXTRA_CA_CERTS: certs.ca });
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(await readFile(join(r.out, 'README.md'), 'utf8'), 'first\n');
  });

  test('a user:password in the URL is sent as a header and masked everywhere', async () => {
    const password = 'pw-s3cret-1234';
    await using server = await startHttpGitServer(srv, { authorization: `Basic ${Buffer.from(`me:${password}`).toString('base64')}` });
    const root = join(work, 'root-userinfo');
    const fullurl = `${server.url.replace('http://', `http://me:${password}@`)}/app`;
    const r = await build({ g: { source: { identifier: 'git://127.0.0.1/app#v1', attrs: { 'git.fullurl': fullurl } } } }, 'g', [], root);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(await readFile(join(r.out, 'README.md'), 'utf8'), 'first\n');
    await assertNowhere(password, root, r);

    // A refused password: the message names the remote without it.
    await using wrong = await startHttpGitServer(srv, { authorization: 'Basic nope' });
    const bad = await build({ g: { source: { identifier: `git+https://me:${password}@127.0.0.1/app#main` } } }, 'g', ['--progress', 'plain'], root);
    assert.notEqual(bad.exitCode, 0);
    assert.ok(!bad.stderr.includes(password), bad.stderr);
    const badHttp = await build({ g: { source: { identifier: 'git://127.0.0.1/app#main', attrs: { 'git.fullurl': `${wrong.url.replace('http://', `http://me:${password}@`)}/app` } } } }, 'g', ['--progress', 'plain'], root);
    assert.notEqual(badHttp.exitCode, 0);
    assert.match(badHttp.stderr, /E_GIT_SOURCE|git source/);
    assert.ok(!badHttp.stderr.includes(password), badHttp.stderr);
  });

  test('fetches over ssh with the agent given by --ssh and the known hosts of the op', async () => {
    const root = join(work, 'root-ssh');
    const url = `${ssh.url}${srv}/app`;
    const attrs = { 'git.fullurl': url, 'git.mountsshsock': 'gitkey', 'git.knownsshhosts': ssh.knownHosts };
    const temps = async () => (await readdir(tmpdir())).filter((e) => e.startsWith('kiln-git-'));
    const before = await temps();

    const refused = await build({ g: gitOp(`git://127.0.0.1${srv}/app#main`, attrs) }, 'g', ['--progress', 'plain'], root);
    assert.notEqual(refused.exitCode, 0);
    // A git source has no "optional" to mark, unlike an ssh mount.
    assert.match(refused.stderr, /fetches over ssh with agent "gitkey", but it was not given: pass --ssh gitkey=\$SSH_AUTH_SOCK \(or --ssh gitkey=KEYFILE\)$/m);

    // What a kiln killed while its credentials were open leaves: files in a directory named for it, under the root.
    const scratch = join(root, 'git', 'tmp');
    await mkdir(join(scratch, '999999999-1-0123456789ab'), { recursive: true });
    await writeFile(join(scratch, '999999999-1-0123456789ab', 'known_hosts'), ssh.knownHosts);
    const r = await build({ g: gitOp(`git://127.0.0.1${srv}/app#v1`, attrs) }, 'g', ['--ssh', `gitkey=${ssh.agentSocket}`], root);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(await readFile(join(r.out, 'README.md'), 'utf8'), 'first\n');
    assert.deepEqual((await temps()).filter((t) => !before.includes(t)), [], 'nothing in the system temp dir');
    assert.deepEqual(await readdir(scratch), [], "the known_hosts file is removed, and the dead process's too");

    // A host key that does not match is refused.
    const otherKey = `[127.0.0.1]:${new URL(ssh.url).port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n`;
    const wrongHost = await build({ g: gitOp(`git://127.0.0.1${srv}/app#main`, { ...attrs, 'git.knownsshhosts': otherKey }) }, 'g', ['--progress', 'plain', '--ssh', `gitkey=${ssh.agentSocket}`], join(work, 'root-ssh2'));
    assert.notEqual(wrongHost.exitCode, 0);
    assert.match(wrongHost.stderr, /Host key verification failed|host key/i);
  });

  test('two kiln processes fetch one remote into one root at once', async () => {
    const root = join(work, 'root-concurrent');
    const files = await Promise.all(
      ['main', 'v1', commits['first'] ?? ''].map(async (ref, i) => {
        const file = join(work, `concurrent${i}.json`);
        await writeFile(file, JSON.stringify({ version: 1, ops: { g: gitOp(`${daemon.url}/app#${ref}`) }, result: 'g' }));
        return file;
      }),
    );
    const runs = await Promise.all(files.map((file, i) => startKiln(['build', '--root', root, '--progress', 'plain', '-o', `type=local,dest=${join(work, `concurrent-out${i}`)}`, file], { env: { KILN_LOG: 'warn' } })));
    for (const r of runs) assert.equal(r.exitCode, 0, String(r.stderr));
    assert.equal(await readFile(join(work, 'concurrent-out0', 'README.md'), 'utf8'), 'second\n');
    assert.equal(await readFile(join(work, 'concurrent-out1', 'README.md'), 'utf8'), 'first\n');
    const repos = (await readdir(join(root, 'git'))).filter((e) => e.endsWith('.git'));
    assert.equal(repos.length, 1, 'one bare repository for the remote');
    assert.equal(await gitIn(join(root, 'git', repos[0] ?? ''), ['fsck', '--no-progress', '--connectivity-only']), '');
  });

  test('a git killed mid-fetch leaves nothing that breaks the next build: no partial objects, no stale shallow.lock', async () => {
    const repo = join(srv, 'killed');
    await initRepo(repo);
    await commitFiles(repo, { 'a.txt': 'a\n', 'b.txt': 'b\n' });
    const root = join(work, 'root-killed');
    const ops = { g: gitOp(`${daemon.url}/killed#main`) };
    const first = await build(ops, 'g', [], root);
    assert.equal(first.exitCode, 0, first.stderr);
    const bare = join(root, 'git', (await readdir(join(root, 'git'))).find((e) => e.endsWith('.git')) ?? '');
    // A fetch's objects come as one pack (whole or absent), not loose objects one by one.
    assert.match(await gitIn(bare, ['count-objects', '-v']), /^count: 0$/m);

    // What a SIGKILLed git leaves behind: its lock on the shallow file.
    await writeFile(join(bare, 'shallow.lock'), '');
    const next = await commitFiles(repo, { 'a.txt': 'a2\n' });
    const again = await build(ops, 'g', [], root);
    assert.equal(again.exitCode, 0, again.stderr);
    assert.equal(await readFile(join(again.out, 'a.txt'), 'utf8'), 'a2\n');
    assert.equal(await gitIn(bare, ['rev-parse', '--is-shallow-repository']), 'true', 'fetched at depth 1, not everything');
    assert.ok((await readFile(join(bare, 'shallow'), 'utf8')).includes(next));
  });

  test('a kiln killed while a fetch waits leaves its credential files under the root, where the next build removes them', async () => {
    // A git:// server that accepts and never answers: the ls-remote waits with the op's CA bundle written.
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => sockets.add(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as AddressInfo).port;
    const certs = await makeTestCertificates(await workDir('git-killed-ca'));
    const root = join(work, 'root-killed-creds');
    const scratch = join(root, 'git', 'tmp');
    const temps = async () => (await readdir(tmpdir())).filter((e) => e.startsWith('kiln-git-'));
    const before = await temps();
    const file = join(work, 'def-killed-creds.json');
    await writeFile(file, JSON.stringify({ version: 1, ops: { g: gitOp(`git://127.0.0.1:${port}/app#main`) }, result: 'g' }));
    try {
      const child = startKiln(['build', '--root', root, '--progress', 'plain', file], { env: { NODE_EXTRA_CA_CERTS: certs.ca } });
      const deadline = Date.now() + 20_000;
      while (sockets.size === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(sockets.size, 1, 'git connected');
      child.kill('SIGKILL');
      await child;
      // git (and the git:// relay it runs) die with kiln, while the server still holds their connection open.
      const alive = async () => (await processesWhoseArgs((args) => args.includes(`git://127.0.0.1:${port}/app`) || (args.at(-2) === '127.0.0.1' && args.at(-1) === String(port)))).length;
      const gone = Date.now() + 5_000;
      while ((await alive()) > 0 && Date.now() < gone) await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(await alive(), 0, 'no git process outlives the killed kiln');
      assert.deepEqual((await temps()).filter((t) => !before.includes(t)), [], 'nothing in the system temp dir');
      const left = await readdir(scratch);
      assert.equal(left.length, 1, 'the dead process left one directory under the root');
      assert.deepEqual(await readdir(join(scratch, left[0] ?? '')), ['ca.pem']);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
    const next = await build({ g: gitOp(`${daemon.url}/app#v1`) }, 'g', [], root);
    assert.equal(next.exitCode, 0, next.stderr);
    assert.deepEqual(await readdir(scratch), [], "the dead process's files are gone");
  });

  test('kiln du lists the bare repository; kiln prune --all removes it and the next build fetches again', async () => {
    const root = join(work, 'root-prune');
    const first = await build({ g: gitOp(`${daemon.url}/app#main`) }, 'g', [], root);
    assert.equal(first.exitCode, 0, first.stderr);
    const du = await kiln(['du', '--verbose', '--root', root]);
    assert.equal(du.exitCode, 0, du.stderr);
    assert.match(du.stdout, new RegExp(`Kind:\\s+git\\nDescription:\\s+git repository ${daemon.url}/app\\n`));
    const pruned = await kiln(['prune', '--all', '--root', root]);
    assert.equal(pruned.exitCode, 0, pruned.stderr);
    assert.deepEqual((await readdir(join(root, 'git'))).filter((e) => e.endsWith('.git')), []);
    const again = await build({ g: gitOp(`${daemon.url}/app#v1`) }, 'g', [], root);
    assert.equal(again.exitCode, 0, again.stderr);
    assert.equal(await readFile(join(again.out, 'README.md'), 'utf8'), 'first\n');
  });
});
