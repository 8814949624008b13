/**
 * Build secrets end to end through the CLI, on each worker: `--secret` from
 * a file and from the environment, as a secret mount (owner, mode,
 * read-only, content) and as secretEnv; masked where a process prints them;
 * refused before anything runs when missing unless optional. Last, kiln's
 * root, the outputs and everything kiln printed are searched byte by byte:
 * the values must be nowhere.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { lstat, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { busyboxOps, shStep, WORKERS, workerSuite } from './workers.js';
import { type KilnRun, kiln as runKiln, vertices } from './harness.js';


const fileMount = (dest: string, secret: Record<string, unknown>) => ({ type: 'secret', dest, secret });

for (const workerId of WORKERS) {
describe(`build secrets on the ${workerId} worker`, () => {
  // Random values: finding one anywhere can only mean it leaked.
  const fileSecret = randomBytes(16).toString('hex');
  const envSecret = randomBytes(16).toString('hex');
  let secretFile: string;
  const suite = workerSuite(workerId, 'secrets');
  let n = 0;
  /** Everything kiln printed, and every output written. */
  const printed: KilnRun[] = [];
  const outputs: string[] = [];

  before(async () => {
    secretFile = join(suite.work, 'secret.txt');
    await writeFile(secretFile, fileSecret);
  });

  /** Builds `ops` (on the busybox base) with result `result`, to a local dir and a tar. */
  const build = async (ops: Record<string, unknown>, result: string, args: readonly string[]) => {
    const base = await busyboxOps();
    const file = join(suite.work, `def${n}.json`);
    const out = join(suite.work, `out${n}`);
    const tar = join(suite.work, `out${n++}.tar`);
    await writeFile(file, JSON.stringify({ version: 1, ops: { ...base, ...ops }, result }));
    outputs.push(out, tar);
    const run = await runKiln(['build', file, '--root', suite.root, '--local', 'tools=/bin', '-o', `type=local,dest=${out}`, '-o', `type=tar,dest=${tar}`, ...suite.workerArgs('build'), ...args], { env: { KILN_TEST_TOKEN: envSecret } });
    printed.push(run);
    return { out, run };
  };
  const given = () => ['--secret', `id=s,src=${secretFile}`, '--secret', 'id=e,env=KILN_TEST_TOKEN'];
  const read = (dir: string, name: string) => readFile(join(dir, name), 'utf8');
  const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

  test('a secret mount has the content, owner and mode asked for and is read-only; secretEnv sets the variable; both are masked in logs', async () => {
    const script = [
      'stat -c "%u:%g %a" /run/secrets/s > /out/stat',
      'sha256sum < /run/secrets/s > /out/sum',
      'printf %s "$TOKEN" | sha256sum > /out/envsum',
      'stat -c "%a" /out/nested > /out/nested-mode',
      'echo x 2>/dev/null > /run/secrets/s; echo $? > /out/write-code',
      'echo "file=$(cat /run/secrets/s) env=$TOKEN"',
    ].join('; ');
    const mounts = [fileMount('/run/secrets/s', { id: 's', uid: 1000, gid: 1001, mode: '0440' }), fileMount('/out/nested', { id: 's' })];
    const { out, run } = await build({ use: shStep(script, mounts, { secretEnv: [{ id: 'e', name: 'TOKEN' }] }) }, 'use', [...given(), '--progress', 'rawjson']);
    assert.equal(run.exitCode, 0, run.stderr);
    assert.equal(await read(out, 'stat'), '1000:1001 440\n');
    assert.equal((await read(out, 'sum')).split(' ')[0], sha256(fileSecret));
    assert.equal((await read(out, 'envsum')).split(' ')[0], sha256(envSecret));
    assert.equal(await read(out, 'nested-mode'), '400\n', 'default mode 0400');
    assert.notEqual((await read(out, 'write-code')).trim(), '0', 'read-only');
    assert.deepEqual((await readdir(out)).sort(), ['envsum', 'nested-mode', 'stat', 'sum', 'write-code'], 'no stub left where the secret was mounted in the output');
    const logs = run.stderr
      .split('\n')
      .filter((l) => l.includes('"type":"log"'))
      .map((l) => (JSON.parse(l) as { data: string }).data)
      .join('');
    assert.equal(logs, 'file=**** env=****\n');
  });

  test('a failing command that prints the secrets shows them masked in the log and the error', async () => {
    const script = 'echo "leaking $TOKEN"; cat /run/secrets/s >&2; echo; exit 3';
    const { run } = await build({ fail: shStep(script, [fileMount('/run/secrets/s', { id: 's' })], { secretEnv: [{ id: 'e', name: 'TOKEN' }] }) }, 'fail', [...given(), '--progress', 'plain']);
    assert.equal(run.exitCode, 1);
    assert.match(run.stderr, /did not complete successfully: exit code 3/);
    assert.match(run.stderr, /^ {2}> leaking \*\*\*\*$/m, 'in the error tail');
    assert.match(run.stderr, /^ {2}> \*\*\*\*$/m);
    assert.match(run.stderr, /#\d+ [\d.]+ leaking \*\*\*\*$/m, 'in the plain log');
  });

  test('a missing secret fails before any op runs, naming the op and the flag; an optional one is skipped', async () => {
    const uses = { need: shStep('cat /run/secrets/s > /out/x', [fileMount('/run/secrets/s', { id: 's' })]) };
    const missing = await build(uses, 'need', ['--progress', 'rawjson']);
    assert.equal(missing.run.exitCode, 1);
    assert.match(missing.run.stderr, /^error: op "need" needs secret "s" for the secret mount at \/run\/secrets\/s, but it was not given: pass --secret id=s,src=FILE or --secret id=s,env=VAR \(or mark it optional\)$/m);
    assert.equal(vertices(missing.run.stderr).size, 0, 'no op started');

    const env = { needEnv: shStep('echo "$T" > /out/x', [], { secretEnv: [{ id: 'unset', name: 'T' }] }) };
    const unset = await build(env, 'needEnv', ['--secret', 'id=unset,env=KILN_TEST_NOT_SET', '--progress', 'rawjson']);
    assert.equal(unset.run.exitCode, 1);
    assert.match(unset.run.stderr, /op "needEnv" needs secret "unset" for secretEnv T, but it was not given: pass --secret id=unset,/);
    assert.equal(vertices(unset.run.stderr).size, 0);

    const usage = await build(uses, 'need', ['--secret', 'id=s,type=file']);
    assert.equal(usage.run.exitCode, 2);
    assert.match(usage.run.stderr, /^error: --secret "id=s,type=file": give exactly one of src=FILE or env=VAR$/m);

    const unreadable = await build(uses, 'need', ['--secret', `id=s,src=${join(suite.work, 'no-such-file')}`]);
    assert.equal(unreadable.run.exitCode, 1);
    assert.match(unreadable.run.stderr, /^error: --secret id=s: cannot read .*no-such-file: no such file$/m);

    const script = 'test -e /run/secrets/o; echo $? > /out/mounted; echo "${T-unset}" > /out/env';
    const optional = { opt: shStep(script, [fileMount('/run/secrets/o', { id: 'o', optional: true })], { secretEnv: [{ id: 'o', name: 'T', optional: true }] }) };
    const skipped = await build(optional, 'opt', []);
    assert.equal(skipped.run.exitCode, 0, skipped.run.stderr);
    assert.equal(await read(skipped.out, 'mounted'), '1\n', 'an optional secret not given is not mounted');
    assert.equal(await read(skipped.out, 'env'), 'unset\n');
    assert.deepEqual((await readdir(skipped.out)).sort(), ['env', 'mounted']);
  });

  test("the values are nowhere: not in kiln's root (cache store included), the outputs, or anything kiln printed", async () => {
    assert.ok(printed.length >= 4 && outputs.length >= 8, 'runs after the tests above');
    const needles = [fileSecret, envSecret].map((s) => Buffer.from(s));
    const found: string[] = [];
    const search = (what: string, data: Buffer) => {
      for (const needle of needles) if (data.includes(needle)) found.push(what);
    };
    for (const path of [suite.root, ...outputs, '/dev/shm/kiln-secrets']) {
      for (const file of await regularFiles(path)) search(file, await readFile(file));
    }
    for (const [i, run] of printed.entries()) {
      search(`stdout of run ${i}`, Buffer.from(run.stdout));
      search(`stderr of run ${i}`, Buffer.from(run.stderr));
    }
    assert.deepEqual(found, []);
    assert.ok((await regularFiles(join(suite.root))).some((f) => f.endsWith('.mdb')), 'the lmdb store was searched');
  });
});
}

/** Every regular file under `path` (or `path` itself); nothing when it does not exist. */
async function regularFiles(path: string): Promise<string[]> {
  const info = await lstat(path).catch(() => undefined);
  if (info === undefined) return [];
  if (info.isFile()) return [path];
  if (!info.isDirectory()) return [];
  const files: string[] = [];
  for (const name of await readdir(path)) files.push(...(await regularFiles(join(path, name))));
  return files;
}
