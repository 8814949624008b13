/**
 * The build history through the CLI, on the runc worker with the busybox
 * rootfs: a chatty step's whole output (past the 4 MiB progress keeps),
 * `ls` newest first, `inspect` of a failed build, the failed build's last
 * line naming the history command, `logs --follow` from a second process
 * while the build runs, secrets masked in the stored logs, retention by
 * count, and `kiln prune` removing history.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { gunzipSync } from 'node:zlib';
import { execa } from 'execa';
import { before, describe, test } from 'node:test';
import { KILN, kiln, startKiln } from './harness.js';
import { busyboxOps, shStep, workerSuite } from './workers.js';

interface Listed {
  readonly id: string;
  readonly definition: string;
  readonly status: string;
  readonly run: number;
  readonly cached: number;
}

describe('build history', () => {
  const suite = workerSuite('runc', 'history');
  let n = 0;
  let secretFile: string;
  const secret = randomBytes(16).toString('hex');

  before(async () => {
    secretFile = join(suite.work, 'secret.txt');
    await writeFile(secretFile, secret);
  });

  /** Writes a definition whose result is `name`, an sh step on busybox running `script`. */
  const definition = async (name: string, script: string, mounts: readonly unknown[] = []): Promise<string> => {
    const file = join(suite.work, `${name}-${n++}.json`);
    const step = { ...shStep(script, mounts), metadata: { description: { 'llb.customname': name } } };
    await writeFile(file, JSON.stringify({ version: 1, ops: { ...(await busyboxOps()), [name]: step }, result: name }));
    return file;
  };
  const build = (file: string, args: readonly string[] = [], env: Record<string, string> = {}) =>
    kiln(['build', file, '--root', suite.root, '--local', 'tools=/bin', ...args], { env });
  const history = (args: readonly string[]) => kiln(['history', ...args, '--root', suite.root]);
  const ls = async (): Promise<Listed[]> => {
    const r = await history(['ls', '--format', 'json']);
    assert.equal(r.exitCode, 0, r.stderr);
    return JSON.parse(r.stdout) as Listed[];
  };

  test('a step printing more than 4 MiB: progress is clipped, history logs has every byte', async () => {
    const size = 6 * 1024 * 1024 + 123;
    const file = await definition('chatty', `yes "a line of the chatty step" | head -c ${size}; echo END`);
    const r = await build(file, ['--progress', 'rawjson']);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.match(r.stderr, /output clipped: this step wrote more than 4 MiB/);
    const [latest] = await ls();
    assert.equal(latest?.definition, file);
    assert.equal(latest?.status, 'completed');
    const logs = await execa(process.execPath, [KILN, 'history', 'logs', latest?.id ?? '', '--vertex', 'chatty', '--root', suite.root], { encoding: 'buffer', stripFinalNewline: false });
    const line = Buffer.from('a line of the chatty step\n');
    const expected = Buffer.concat([Buffer.alloc(size, line.toString()), Buffer.from('END\n')]);
    assert.equal(logs.stdout.length, expected.length);
    assert.equal(createHash('sha256').update(logs.stdout).digest('hex'), createHash('sha256').update(expected).digest('hex'));
    // Without an id: the most recent build, every step under its name.
    const all = await history(['logs']);
    assert.equal(all.exitCode, 0, all.stderr);
    assert.match(all.stdout, /^==> chatty <==\na line of the chatty step\n/m);
    assert.ok(all.stdout.endsWith('END'));
  });

  test('ls lists the newest build first; inspect shows what ran, what was cached, and the error', async () => {
    const ok = await build(await definition('fine', 'echo fine'));
    assert.equal(ok.exitCode, 0, ok.stderr);
    const failing = await definition('broken', 'echo before the failure; exit 3');
    const r = await build(failing, ['--progress', 'plain']);
    assert.equal(r.exitCode, 1);
    const listed = await ls();
    assert.deepEqual(listed.slice(0, 2).map((b) => b.status), ['failed', 'completed']);
    assert.equal(listed[0]?.definition, failing);
    assert.match(listed[1]?.definition ?? '', /fine-\d+\.json$/);
    const table = await history(['ls']);
    assert.match(table.stdout.split('\n')[1] ?? '', new RegExp(`^${listed[0]?.id}\\s+\\S+ \\S+Z\\s+${failing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s+failed\\s+\\d+\\.\\ds\\s+0\\s+1$`));

    const inspect = await history(['inspect', listed[0]?.id ?? '']);
    assert.equal(inspect.exitCode, 0, inspect.stderr);
    assert.match(inspect.stdout, /^Status: +failed$/m);
    assert.match(inspect.stdout, /^Vertices: +0 run, 1 cached, 1 failed$/m);
    assert.match(inspect.stdout, /^Error: +op "broken": process "\/bin\/sh -c echo before the failure; exit 3" did not complete successfully: exit code 3$/m);
    assert.match(inspect.stdout, /^busybox --install -s \/bin +CACHED /m);
    assert.match(inspect.stdout, /^broken +ERROR +\S+ \S+Z +\d+\.\ds +19B /m);
    const json = JSON.parse((await history(['inspect', listed[0]?.id ?? '', '--format', 'json'])).stdout) as { status: string; vertices: { name: string; cached: boolean; error?: string }[] };
    assert.equal(json.status, 'failed');
    assert.equal(json.vertices.find((v) => v.name === 'broken')?.error?.includes('exit code 3'), true);
    assert.equal(json.vertices.find((v) => v.name === 'busybox --install -s /bin')?.cached, true);
  });

  test("a failed build's last line names the history command, which prints the whole log", async () => {
    const r = await build(await definition('noisy-failure', 'i=0; while [ $i -lt 30 ]; do echo "line $i"; i=$((i+1)); done; exit 4'), ['--progress', 'plain']);
    assert.equal(r.exitCode, 1);
    const last = r.stderr.trimEnd().split('\n').at(-1) ?? '';
    const m = /^see the full log: kiln history logs (\S+) --root (\S+)$/.exec(last);
    assert.ok(m !== null, `last line: ${last}`);
    assert.equal(m[2], suite.root);
    assert.match(r.stderr, /last lines of output:\n {2}> line 20\n/, 'the error quotes only the tail');
    const logs = await kiln(['history', 'logs', m[1] ?? '', '--root', m[2] ?? '', '--vertex', 'noisy-failure']);
    assert.equal(logs.stdout, Array.from({ length: 30 }, (_, i) => `line ${i}`).join('\n'));
  });

  test('an unknown id is one line and a non-zero exit', async () => {
    const r = await history(['inspect', '20000101-000000-dead']);
    assert.equal(r.exitCode, 1);
    assert.match(r.stderr, /^error: no build "20000101-000000-dead" in the history of .+ \(kiln history ls lists them\)$/);
    const logs = await history(['logs', '20000101-000000-dead']);
    assert.equal(logs.exitCode, 1);
    assert.equal(logs.stderr.trimEnd().split('\n').length, 1);
  });

  test('logs --follow from a second process sees lines of a running build and ends when it ends', async () => {
    const file = await definition('slow', 'echo "tick one"; sleep 3; echo "tick two"; sleep 1; echo "tick three"');
    const child = startKiln(['build', file, '--root', suite.root, '--local', 'tools=/bin', '--progress', 'plain']);
    let id: string | undefined;
    for (let i = 0; i < 300 && id === undefined; i++) {
      await sleep(100);
      id = (await ls()).find((b) => b.definition === file && b.status === 'running')?.id;
    }
    assert.ok(id !== undefined, 'the build shows up as running');
    const follower = execa(process.execPath, [KILN, 'history', 'logs', id, '--follow', '--root', suite.root], { reject: false });
    let seen = '';
    let buildDone = false;
    let seenWhileRunning = false;
    void child.then(() => (buildDone = true));
    follower.stdout?.on('data', (chunk: Buffer) => {
      seen += chunk.toString();
      if (seen.includes('tick one') && !buildDone) seenWhileRunning = true;
    });
    const [built, followed] = await Promise.all([child, follower]);
    assert.equal(built.exitCode, 0, built.stderr);
    assert.equal(followed.exitCode, 0, followed.stderr);
    assert.ok(seenWhileRunning, 'a line came through before the build ended');
    assert.match(followed.stdout, /==> slow <==\ntick one\ntick two\ntick three/);
  });

  test('two kiln processes on one root each write their own record', async () => {
    const files = [await definition('twin-a', 'sleep 1; echo from a'), await definition('twin-b', 'sleep 1; echo from b')];
    const runs = await Promise.all(files.map((file) => build(file)));
    for (const r of runs) assert.equal(r.exitCode, 0, r.stderr);
    const listed = await ls();
    for (const [i, file] of files.entries()) {
      const record = listed.find((b) => b.definition === file);
      assert.equal(record?.status, 'completed', file);
      const logs = await history(['logs', record?.id ?? '', '--vertex', i === 0 ? 'twin-a' : 'twin-b']);
      assert.equal(logs.stdout, i === 0 ? 'from a' : 'from b');
    }
  });

  test('a secret the step prints is masked in the history, and is nowhere in its files', async () => {
    const mount = { type: 'secret', dest: '/run/secrets/s', secret: { id: 's' } };
    const r = await build(await definition('leaky', 'echo "the secret is $(cat /run/secrets/s)"; cat /run/secrets/s; echo; exit 1', [mount]), ['--secret', `id=s,src=${secretFile}`]);
    assert.equal(r.exitCode, 1);
    const logs = await history(['logs', '--vertex', 'leaky']);
    assert.equal(logs.stdout, 'the secret is ****\n****');
    const dir = join(suite.root, 'history');
    for (const build of await readdir(dir)) {
      const record = await readFile(join(dir, build, 'record.json'));
      assert.ok(!record.includes(secret), `record ${build}`);
      for (const log of await readdir(join(dir, build, 'logs'))) {
        assert.ok(!gunzipSync(await readFile(join(dir, build, 'logs', log))).includes(secret), `log ${build}/${log}`);
      }
    }
  });

  test('retention by count drops the oldest builds at the end of a build; 0 keeps no history', async () => {
    const before = (await ls()).length;
    assert.ok(before >= 3);
    const r = await build(await definition('kept', 'echo kept'), ['--history-keep-builds', '2']);
    assert.equal(r.exitCode, 0, r.stderr);
    const after = await ls();
    assert.equal(after.length, 2);
    assert.ok(after[0]?.definition.includes('kept'));
    const none = await build(await definition('unrecorded', 'exit 5'), ['--progress', 'plain'], { KILN_HISTORY_KEEP_BUILDS: '0' });
    assert.equal(none.exitCode, 1);
    assert.doesNotMatch(none.stderr, /see the full log/);
    assert.equal((await ls()).length, 2);
  });

  test('kiln prune --all removes the history', async () => {
    assert.ok((await ls()).length > 0);
    const r = await kiln(['prune', '--all', '--root', suite.root]);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.match(r.stdout, /^History:\t2 builds removed$/m);
    assert.deepEqual(await ls(), []);
    const logs = await history(['logs']);
    assert.equal(logs.exitCode, 1);
    assert.match(logs.stderr, /^error: no build in the history of .+ yet$/);
  });
});
