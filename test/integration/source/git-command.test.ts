/**
 * How git is run (src/source/git/git-command.ts): a machine without git
 * gets one line saying so, not setpriv's or node's words for a missing file.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { findInPath } from '../../../src/command.js';
import { git } from '../../../src/source/git/git-command.js';

describe('running git', () => {
  let dir: string;
  const savedPath = process.env['PATH'];
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-git-command-'));
  });
  after(async () => {
    process.env['PATH'] = savedPath;
    await rm(dir, { recursive: true, force: true });
  });

  it('says git is not installed when PATH has setpriv but no git', async () => {
    const setpriv = await findInPath('setpriv');
    assert.ok(setpriv !== undefined, 'setpriv (util-linux) is on this machine');
    await symlink(setpriv, join(dir, 'setpriv'));
    process.env['PATH'] = dir;
    const site = { op: 'repo', field: 'ops.repo.source.identifier', remote: 'git://127.0.0.1/app' };
    await assert.rejects(
      git({ args: ['ls-remote', 'git://127.0.0.1:9/app'], signal: new AbortController().signal, action: 'resolving main', site }),
      (err: Error & { code?: string; op?: string }) => {
        assert.equal(err.message, 'git source git://127.0.0.1/app: the git command is not installed (on Debian: apt-get install git)');
        assert.equal(err.code, 'E_GIT_SOURCE');
        assert.equal(err.op, 'repo');
        return true;
      },
    );
  });
});
