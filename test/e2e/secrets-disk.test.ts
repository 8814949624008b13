/**
 * Secrets never on a disk, on each worker: while a step with a secretEnv
 * and a secret mount runs, no file in kiln's root, nor anywhere on the
 * filesystem that holds the temp dirs, contains the values (containerd's
 * own root excepted: it keeps the spec, as with BuildKit). The bundle that
 * holds them is on a tmpfs under /run/kiln; when kiln is SIGKILLed in the
 * step, it stays there until the next kiln on that root removes it.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import { kiln, startKiln } from './harness.js';
import { busyboxOps, shStep, WORKERS, workerSuite } from './workers.js';

/** Where kiln keeps a root's bundles, as the README says: /run/kiln/HASH/EXECUTOR. */
function runtimeDir(root: string, worker: string): string {
  return join('/run/kiln', createHash('sha256').update(resolve(root)).digest('hex').slice(0, 16), worker);
}

/**
 * The regular files under `dirs` that contain one of `needles`, staying on
 * each dir's filesystem (so no /proc, /sys, /run or /dev/shm) and out of
 * `skip`. grep -r skips FIFOs and devices.
 */
async function filesHolding(dirs: readonly string[], needles: readonly string[], skip: readonly string[] = []): Promise<string[]> {
  const prune = skip.flatMap((p) => ['-path', p, '-prune', '-o']);
  const script = 'find "$@" -type f -print0 2>/dev/null | xargs -0r grep -lF -e "$NEEDLE1" -e "$NEEDLE2" 2>/dev/null; true';
  const r = await execa('sh', ['-c', script, 'sh', ...dirs, '-xdev', ...prune], {
    env: { NEEDLE1: needles[0] ?? '', NEEDLE2: needles[1] ?? needles[0] ?? '' },
    timeout: 60_000,
  });
  return r.stdout.split('\n').filter((l) => l !== '');
}

for (const workerId of WORKERS) {
  describe(`secrets on the ${workerId} worker never reach a disk`, () => {
    const suite = workerSuite(workerId, 'secrets-disk');
    // Random values: finding one anywhere can only mean it leaked.
    const envSecret = randomBytes(16).toString('hex');
    const fileSecret = randomBytes(16).toString('hex');
    const env = { KILN_LOG: 'warn', KILN_TEST_ENV_SECRET: envSecret, KILN_TEST_FILE_SECRET: fileSecret };
    const secretArgs = ['--secret', 'id=e,env=KILN_TEST_ENV_SECRET', '--secret', 'id=f,env=KILN_TEST_FILE_SECRET'];

    const definition = async (name: string, script: string): Promise<string> => {
      const file = join(suite.work, `${name}.json`);
      const step = shStep(script, [{ dest: '/run/secrets/f', type: 'secret', secret: { id: 'f' } }], { secretEnv: [{ id: 'e', name: 'TOKEN' }] });
      await writeFile(file, JSON.stringify({ version: 1, ops: { ...(await busyboxOps()), step }, result: 'step' }));
      return file;
    };
    const buildArgs = (file: string) => ['build', file, '--root', suite.root, '--local', 'tools=/bin', ...suite.workerArgs('build'), ...secretArgs, '--progress', 'rawjson'];

    test('while the step runs and after kiln is killed in it, only the tmpfs holds them; the next kiln removes that bundle', { timeout: 180_000 }, async () => {
      const sleeping = await definition('sleeping', 'test -s /run/secrets/f && test -n "$TOKEN" && printf "started %080d\\n" 0; sleep 60');
      const child = startKiln(buildArgs(sleeping), { env });
      let stderr = '';
      await new Promise<void>((resolveStarted, reject) => {
        child.stderr?.on('data', (chunk: Buffer) => {
          stderr += chunk.toString('utf8');
          // The first bytes of output. Masking holds back a secret's length of the
          // output's end until more comes, hence the long line the step prints.
          if (stderr.includes('"type":"log"')) resolveStarted();
        });
        void child.then(() => reject(new Error(`kiln ended before the step started: ${stderr}`)));
      });

      const needles = [envSecret, fileSecret];
      // containerd's root and state keep the spec: containerd's, not kiln's (see the README).
      const skip = suite.containerd === undefined ? [] : [suite.containerd.dir];
      const onDisk = () => filesHolding([suite.root, suite.work, tmpdir()], needles, skip);
      assert.deepEqual(await onDisk(), [], 'no file on the disk holds a secret while the step runs');
      const runtime = runtimeDir(suite.root, workerId);
      assert.equal((await execa('stat', ['-f', '-c', '%T', runtime])).stdout, 'tmpfs');
      if (workerId === 'runc') {
        // The search finds what is there: the bundle's config.json has the secretEnv.
        assert.deepEqual((await filesHolding([runtime], needles)).map((f) => f.split('/').pop()), ['config.json']);
      }
      const ownDirs = async () => (await readdir(workerId === 'runc' ? join(runtime, 'bundles') : runtime)).filter((n) => n.startsWith(`${child.pid}-`));
      assert.notDeepEqual(await ownDirs(), [], `the running kiln's directory is in ${runtime}`);

      child.kill('SIGKILL');
      await child;
      assert.notDeepEqual(await ownDirs(), [], 'left on the tmpfs by the killed kiln');
      if (workerId === 'runc') assert.notDeepEqual(await filesHolding([runtime], needles), []);
      assert.deepEqual(await onDisk(), [], 'nor on the disk after the kill');

      const next = await kiln(buildArgs(await definition('next', 'true')), { env });
      assert.equal(next.exitCode, 0, next.stderr);
      assert.deepEqual(await ownDirs(), [], 'the next kiln on the root removed what the killed one left');
      assert.deepEqual(await filesHolding([runtime], needles), [], 'and with it the secret');
      if (suite.containerd !== undefined) assert.equal((await suite.containerd.ctr(['containers', 'ls', '-q'])).trim(), '', "and the killed kiln's container");
    });
  });
}
