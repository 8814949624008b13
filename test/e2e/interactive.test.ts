/**
 * `kiln build -i` in a real terminal, on each worker: a step writes /state,
 * a cache file and an output, then fails; kiln opens a shell in it inside a
 * tmux pane, where what is typed runs in the step as the process left it
 * (its files, cache mount, secret, env, working directory and user), on a
 * TTY of the pane's size that follows resizes and takes Ctrl-C. `exit` ends
 * kiln with the build's failure code, and nothing of the shell is left:
 * no mount under kiln's root, no container. Off a terminal, -i is refused
 * before anything runs.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, test } from 'node:test';
import { execa } from 'execa';
import { runtimeDirPath } from '../../src/executor/runtime-dir.js';
import { startTmux, type TmuxSession } from '../support/tmux-session.js';
import { EXAMPLES, KILN, kiln, mountsUnder, vertices } from './harness.js';
import { busyboxOps, WORKERS, workerSuite } from './workers.js';

/** The failing step: root writable (output 0), /out (output 1), a cache mount and a secret. */
function failingStep(): Record<string, unknown> {
  return {
    inputs: ['base'],
    exec: {
      meta: {
        args: ['/bin/sh', '-c', 'echo state-at-failure > /state; echo in-cache > /cache/c; echo out-file > /out/o; echo step-says-goodbye; exit 1'],
        env: ['STEP_VAR=from-the-step'],
        cwd: '/work/dir',
      },
      mounts: [
        { dest: '/', input: 0, output: 0 },
        { dest: '/out', input: -1, output: 1 },
        { dest: '/cache', type: 'cache', cache: { id: 'shell-cache' } },
        { dest: '/run/secrets/token', type: 'secret', secret: { id: 'token' } },
      ],
    },
    metadata: { description: { 'llb.customname': 'failing step' } },
  };
}

for (const workerId of WORKERS) {
  describe(`kiln build -i on the ${workerId} worker`, () => {
    const suite = workerSuite(workerId, 'interactive');
    const sessions: TmuxSession[] = [];
    // A test that failed half-way leaves kiln in its shell: the session's end stops it before the next test looks for leftovers.
    afterEach(async () => {
      for (const s of sessions.splice(0)) await s.close();
    });

    /** Containers this worker still has (runc's list, or containerd's containers and tasks in kiln's namespace). */
    const containers = async (): Promise<string> => {
      if (suite.containerd === undefined) return (await execa('runc', ['--root', join(runtimeDirPath({ root: suite.root, executor: 'runc' }), 'runc'), 'list', '-q'])).stdout.trim();
      return `${await suite.containerd.ctr(['containers', 'ls', '-q'], 'kiln')}${await suite.containerd.ctr(['tasks', 'ls', '-q'], 'kiln')}`.trim();
    };

    test('a shell in the failed step sees its files, mounts, env, cwd and user on a real TTY; exit ends kiln with 1 and leaves nothing', async () => {
      const def = join(suite.work, 'fail.json');
      await writeFile(def, JSON.stringify({ version: 1, ops: { ...(await busyboxOps()), fail: failingStep() }, result: 'fail' }));
      const secret = join(suite.work, 'token');
      await writeFile(secret, 'secret-in-the-shell');
      const args = ['build', def, '--root', suite.root, '--local', 'tools=/bin', '--secret', `id=token,src=${secret}`, '-i', ...suite.workerArgs('build')];
      const term = await startTmux([process.execPath, KILN, ...args], { columns: 100, rows: 30, env: { KILN_LOG: 'warn' } });
      sessions.push(term);

      const opened = await term.waitFor((s) => /^\/work\/dir # ?$/m.test(s), 90_000);
      assert.match(opened, /kiln: op "fail" failed: process "\/bin\/sh -c echo state-at-failure/, opened);
      assert.match(opened, /kiln: opening \/bin\/sh in the failed step; exit it to end the build/);
      assert.ok(!opened.includes('[+] Building'), `the live progress view is cleared before the shell:\n${opened}`);

      await term.sendKeys('clear; cat /state /cache/c /out/o /run/secrets/token; echo; pwd; id; env | sort; stty size', 'Enter');
      const seen = await term.waitFor((s) => /^\d+ \d+$/m.test(s));
      for (const line of ['state-at-failure', 'in-cache', 'out-file', 'secret-in-the-shell', '/work/dir', 'STEP_VAR=from-the-step', 'PWD=/work/dir', '30 100']) {
        assert.match(seen, new RegExp(`^${line}$`, 'm'), `the shell shows ${line}:\n${seen}`);
      }
      assert.match(seen, /^uid=0\(root\) gid=0\(root\)|^uid=0 gid=0/m, seen);

      // The pseudo-terminal follows the pane's size; Ctrl-C stops what runs in the shell, not kiln.
      await term.resize(80, 24);
      await term.sendKeys('clear; stty size; sleep 100', 'Enter');
      await term.waitFor((s) => /^24 80$/m.test(s));
      await term.sendKeys('C-c');
      await term.sendKeys('echo still-in-the-shell', 'Enter');
      await term.waitFor((s) => /^still-in-the-shell$/m.test(s));

      await term.sendKeys('exit', 'Enter');
      const end = await term.waitFor((s) => s.includes('[exit '));
      assert.match(end, /\[exit 1\]/, end);
      assert.match(end, /^error: op "fail": process .* did not complete successfully: exit code 1$/m, end);
      assert.match(end, /^=> ERROR \[failing step\]/m, 'the progress view is back for the end of the build');

      assert.deepEqual(await mountsUnder(suite.root), [], 'no mount left under the root');
      assert.equal(await containers(), '', 'no container left');
    });

    test("kiln debug opens a shell on a recorded step's result with its env, cwd and user; the shell's exit status is kiln's", async () => {
      const def = join(suite.work, 'made.json');
      const step = {
        inputs: ['base'],
        exec: { meta: { args: ['/bin/sh', '-c', 'mkdir -p /w && echo result-state > /state'], env: ['STEP_VAR=kept'], cwd: '/w' }, mounts: [{ dest: '/', input: 0, output: 0 }] },
      };
      await writeFile(def, JSON.stringify({ version: 1, ops: { ...(await busyboxOps()), made: step }, result: 'made' }));
      const built = await kiln(['build', def, '--root', suite.root, '--local', 'tools=/bin', ...suite.workerArgs('build')]);
      assert.equal(built.exitCode, 0, built.stderr);
      const workerFlag = suite.containerd === undefined ? [] : ['--worker', 'containerd'];
      const term = await startTmux([process.execPath, KILN, 'debug', '--vertex', 'made', '--root', suite.root, ...workerFlag, ...suite.workerArgs('debug')], {
        columns: 100,
        rows: 30,
        env: { KILN_LOG: 'warn' },
      });
      sessions.push(term);
      await term.waitFor((s) => /^\/w # ?$/m.test(s), 90_000);
      await term.sendKeys('clear; cat /state; pwd; env | sort', 'Enter');
      const seen = await term.waitFor((s) => /^STEP_VAR=kept$/m.test(s));
      assert.match(seen, /^result-state$/m, seen);
      assert.match(seen, /^\/w$/m, seen);
      // What the shell changes is thrown away: the cached result stays as the step left it.
      await term.sendKeys('rm /state; exit 3', 'Enter');
      const end = await term.waitFor((s) => s.includes('[exit '));
      assert.match(end, /\[exit 3\]/, end);
      assert.deepEqual(await mountsUnder(suite.root), [], 'no mount left under the root');
      assert.equal(await containers(), '', 'no container left');

      const again = await kiln(['build', def, '--root', suite.root, '--local', 'tools=/bin', '-o', `type=local,dest=${join(suite.work, 'made-out')}`, ...suite.workerArgs('build')]);
      assert.equal(again.exitCode, 0, again.stderr);
      assert.equal(existsSync(join(suite.work, 'made-out', 'state')), true, 'the shell did not change the result');

      // kiln prune keeps the results a kept build record names; prune --all takes the history and them.
      assert.equal((await kiln(['prune', '--root', suite.root])).exitCode, 0);
      const kept = await kiln(['build', def, '--root', suite.root, '--local', 'tools=/bin', '--progress', 'rawjson', ...suite.workerArgs('build')]);
      assert.ok([...vertices(kept.stderr).values()].every((v) => v.cached), `every step is still cached after kiln prune:\n${kept.stderr}`);
      assert.equal((await kiln(['prune', '--all', '--root', suite.root])).exitCode, 0);
      const cold = await kiln(['build', def, '--root', suite.root, '--local', 'tools=/bin', '--progress', 'rawjson', ...suite.workerArgs('build')]);
      assert.ok([...vertices(cold.stderr).values()].some((v) => !v.cached), 'prune --all removed them');

      const unknown = await kiln(['debug', '--vertex', 'nope', '--root', suite.root], { input: '' });
      assert.equal(unknown.exitCode, 2, 'off a terminal: refused before anything');
      assert.match(unknown.stderr, /kiln debug needs a terminal on stdin/);
    });

    test('the step\'s user is the shell\'s', async () => {
      const def = join(suite.work, 'user.json');
      const step = { inputs: ['base'], exec: { meta: { args: ['/bin/sh', '-c', 'exit 7'], user: '1:2' }, mounts: [{ dest: '/', input: 0, output: 0 }] } };
      await writeFile(def, JSON.stringify({ version: 1, ops: { ...(await busyboxOps()), fail: step }, result: 'fail' }));
      const term = await startTmux([process.execPath, KILN, 'build', def, '--root', suite.root, '--local', 'tools=/bin', '-i', '--shell', '/bin/sh -i', ...suite.workerArgs('build')], {
        columns: 100,
        rows: 30,
        env: { KILN_LOG: 'warn' },
      });
      sessions.push(term);
      await term.waitFor((s) => s.includes('kiln: opening /bin/sh -i in the failed step'), 90_000);
      await term.sendKeys('id -u; id -g', 'Enter');
      await term.waitFor((s) => /^1\n2$/m.test(s));
      await term.sendKeys('exit 5', 'Enter');
      const end = await term.waitFor((s) => s.includes('[exit '));
      assert.match(end, /kiln: the shell exited with code 5/, end);
      assert.match(end, /\[exit 1\]/, 'the build\'s failure code, not the shell\'s');
      assert.deepEqual(await mountsUnder(suite.root), []);
      assert.equal(await containers(), '');
    });
  });
}

describe('kiln build -i off a terminal', () => {
  test('is refused before anything runs, with the usage exit code', async () => {
    const root = join('/tmp', `kiln-i-${process.pid}-never-made`);
    const r = await kiln(['build', join(EXAMPLES, 'busybox.json'), '--root', root, '-i'], { input: '' });
    assert.equal(r.exitCode, 2, r.stderr);
    assert.equal(r.stderr, 'error: -i (--interactive) needs a terminal on stdin for the shell, and stdin is not a terminal (run kiln from a terminal, or leave out -i)');
    assert.equal(existsSync(root), false, 'no root was made: nothing ran');
    const shellOnly = await kiln(['build', join(EXAMPLES, 'busybox.json'), '--root', root, '--shell', '/bin/bash']);
    assert.equal(shellOnly.exitCode, 2);
    assert.equal(shellOnly.stderr, 'error: --shell is the command of the -i shell: give -i (--interactive) too');
  });
});
