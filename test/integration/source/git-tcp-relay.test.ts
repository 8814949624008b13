/**
 * The relay git:// connections go through (src/source/git/tcp-proxy.ts):
 * written once under the git folder, executable, put back if changed;
 * git through it lists and fetches what it would directly; a refused
 * connection is one line naming the host and port.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { tcpNodelayEnv } from '../../../src/source/git/tcp-proxy.js';
import { commitFiles, freePort, type GitServer, gitIn, initRepo, startGitDaemon } from '../../support/git-servers.js';

const run = promisify(execFile);

describe('the git:// relay with TCP_NODELAY', () => {
  let dir: string;
  let daemon: GitServer;
  let commit: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-git-relay-'));
    await initRepo(join(dir, 'srv', 'repo'));
    const files: Record<string, string> = {};
    for (let i = 0; i < 300; i++) files[`dir${i % 10}/file${i}.txt`] = `${'line\n'.repeat(i)}`;
    commit = await commitFiles(join(dir, 'srv', 'repo'), files);
    daemon = await startGitDaemon(join(dir, 'srv'));
  });
  after(async () => {
    await daemon.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('is written once, executable, and put back when changed', async () => {
    const gitDir = join(dir, 'git-a');
    const env = await tcpNodelayEnv(gitDir);
    const relay = env['GIT_PROXY_COMMAND'];
    assert.ok(relay !== undefined && relay.startsWith(gitDir), 'perl is there, so git is told to use the relay');
    assert.equal((await stat(relay)).mode & 0o777, 0o755);
    const text = await readFile(relay, 'utf8');
    await writeFile(relay, 'changed');
    assert.deepEqual(await tcpNodelayEnv(gitDir), env);
    assert.equal(await readFile(relay, 'utf8'), text);
  });

  it('lists and fetches through the relay what git gets directly', async () => {
    const env = { ...process.env, ...(await tcpNodelayEnv(join(dir, 'git-b'))) };
    const url = `${daemon.url}/repo`;
    const listed = await run('git', ['ls-remote', url], { env });
    assert.equal(listed.stdout, (await run('git', ['ls-remote', url])).stdout);
    const bare = join(dir, 'fetched.git');
    await run('git', ['init', '--quiet', '--bare', bare]);
    await run('git', ['fetch', '--quiet', '--depth=1', url, `+${commit}:refs/kiln/x`], { cwd: bare, env });
    assert.equal(await gitIn(bare, ['rev-parse', 'refs/kiln/x^{tree}']), await gitIn(join(dir, 'srv', 'repo'), ['rev-parse', 'HEAD^{tree}']));
  });

  it('says which host and port refused the connection', async () => {
    const env = { ...process.env, ...(await tcpNodelayEnv(join(dir, 'git-c'))) };
    const port = await freePort();
    const failed = await run('git', ['ls-remote', `git://127.0.0.1:${port}/repo`], { env }).then(
      () => undefined,
      (err: unknown) => err as { stderr: string },
    );
    assert.ok(failed !== undefined, 'ls-remote of a closed port failed');
    assert.match(failed.stderr, new RegExp(`unable to connect to 127\\.0\\.0\\.1 port ${port}: Connection refused`));
  });
});
