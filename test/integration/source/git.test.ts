/**
 * The git source through the programmatic API: a definition made with
 * `DefinitionBuilder.git` solved against a `git daemon` on 127.0.0.1, on
 * each snapshotter; the status events it reports; a cancelled fetch leaves
 * the bare repository usable and nothing running.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DefinitionBuilder, type ProgressEvent, Session, solve } from '../../../src/index.js';
import { commitFiles, type GitServer, initRepo, startGitDaemon } from '../../support/git-servers.js';

describe('git sources through the API', () => {
  let dir: string;
  let daemon: GitServer;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-git-api-'));
    await initRepo(join(dir, 'srv', 'repo'));
    await commitFiles(join(dir, 'srv', 'repo'), { 'web/index.html': '<h1>hi</h1>\n', 'README.md': 'readme\n' });
    daemon = await startGitDaemon(join(dir, 'srv'));
  });
  after(async () => {
    await daemon.close();
    await rm(dir, { recursive: true, force: true });
  });

  for (const snapshotter of ['overlayfs', 'native'] as const) {
    it(`b.git checks out a subdir on ${snapshotter}, and reports its steps`, async () => {
      const b = new DefinitionBuilder();
      const def = b.build(b.git('site', `${daemon.url}/repo`, { ref: 'main', subdir: 'web' }));
      const events: ProgressEvent[] = [];
      await using session = await Session.open({ root: join(dir, `root-${snapshotter}`), snapshotter });
      await using result = await solve(session, def, { progress: { emit: (e) => events.push(e) } });
      await using mounted = await result.mount();
      assert.deepEqual(await readdir(mounted.path), ['index.html']);
      assert.equal(await readFile(join(mounted.path, 'index.html'), 'utf8'), '<h1>hi</h1>\n');
      const steps = events.flatMap((e) => (e.type === 'status' && e.completed !== undefined ? [e.id.replace(/[0-9a-f]{12}$/, 'ID')] : []));
      assert.deepEqual(steps, ['resolving main', 'fetching ID', 'checking out']);
    });
  }

  it('a cancelled build stops, and the next one on the same root succeeds', async () => {
    const root = join(dir, 'root-cancel');
    const b = new DefinitionBuilder();
    const def = b.build(b.git('repo', `${daemon.url}/repo`, { ref: 'main' }));
    {
      await using session = await Session.open({ root });
      const controller = new AbortController();
      const started = solve(session, def, { signal: controller.signal, progress: { emit: (e) => e.type === 'status' && controller.abort(new Error('stop')) } });
      await assert.rejects(started);
    }
    await using session = await Session.open({ root });
    await using result = await solve(session, def);
    await using mounted = await result.mount();
    assert.equal(await readFile(join(mounted.path, 'README.md'), 'utf8'), 'readme\n');
  });
});
