/**
 * The resident spawner (src/spawner.ts) with real processes and real perl:
 * exit codes, signals, output streamed in order and in full, stdin, a
 * command that cannot start, kill and abort, node's spawn once the spawner
 * is gone, and no spawner left behind when its parent dies. (The runc
 * executor's own tests run their containers through it.)
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Child, type SpawnRequest, spawnChild, spawnerPid, startSpawner } from '../../../src/spawner.js';

interface Ended {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly error: string | undefined;
}

function run(request: Partial<SpawnRequest> & { file: string; args: readonly string[] }, input?: string, onChild?: (child: Child) => void): Promise<Ended> {
  const child = spawnChild({ stdin: input === undefined ? 'ignore' : 'pipe', stdout: 'pipe', stderr: 'pipe', ...request });
  onChild?.(child);
  let stdout = '';
  let stderr = '';
  let error: string | undefined;
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  child.once('error', (err: Error) => (error = err.message));
  if (input !== undefined) child.stdin?.end(input);
  return new Promise((resolve) => child.once('close', (code: number | null, signal: NodeJS.Signals | null) => resolve({ code, signal, stdout, stderr, error })));
}

function alive(pid: number): boolean {
  return existsSync(`/proc/${pid}`) && !/^State:\s+Z/m.test(readStatus(pid));
}

function readStatus(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return '';
  }
}

describe('spawner', () => {
  test('a reader that stops early closes the pipe: the child ends with SIGPIPE instead of blocking', async () => {
    startSpawner();
    const child = spawnChild({ file: 'yes', args: [], stdin: 'ignore', stdout: 'pipe', stderr: 'ignore' });
    const closed = new Promise<NodeJS.Signals | null>((resolve) => child.once('close', (_code: number | null, signal: NodeJS.Signals | null) => resolve(signal)));
    for await (const chunk of child.stdout as AsyncIterable<Buffer>) {
      assert.ok(chunk.length > 0);
      break;
    }
    const signal = await Promise.race([closed, sleep(10_000).then(() => 'timed out')]);
    assert.equal(signal, 'SIGPIPE');
  });

  test('runs commands through the resident perl process: exit code, output, stdin, cwd, env', async () => {
    startSpawner();
    const pid = spawnerPid();
    assert.ok(pid !== undefined, 'started');
    const ended = await run({ file: '/bin/sh', args: ['-c', 'echo out; echo err >&2; exit 3'] });
    assert.deepEqual(ended, { code: 3, signal: null, stdout: 'out\n', stderr: 'err\n', error: undefined });
    assert.equal((await run({ file: 'cat', args: [] }, 'line\n'.repeat(20000))).stdout, 'line\n'.repeat(20000));
    assert.equal((await run({ file: 'pwd', args: [], cwd: '/' })).stdout, '/\n');
    assert.equal((await run({ file: '/bin/sh', args: ['-c', 'echo "$A|$PATH"'], env: { A: 'x y', PATH: '/bin' } })).stdout, 'x y|/bin\n');
    assert.equal((await run({ file: '/bin/sh', args: ['-c', 'echo $0'], argv0: 'named' })).stdout, 'named\n');
    // The children are the spawner's, not this process's.
    const ppid = await run({ file: '/bin/sh', args: ['-c', 'echo $PPID'] });
    assert.equal(Number(ppid.stdout), pid);
  });

  test('streams output as it is written, in full', async () => {
    const times: number[] = [];
    const child = spawnChild({ file: '/bin/sh', args: ['-c', 'echo a; sleep 0.5; echo b'], stdin: 'ignore', stdout: 'pipe', stderr: 'ignore' });
    child.stdout?.on('data', () => times.push(Date.now()));
    await new Promise((resolve) => child.once('close', resolve));
    assert.equal(times.length, 2, 'two writes, two chunks');
    assert.ok((times[1] ?? 0) - (times[0] ?? 0) >= 300, 'the first arrived before the second was written');
    const big = await run({ file: 'head', args: ['-c', '3000000', '/dev/zero'] });
    assert.equal(big.stdout.length, 3000000);
  });

  test('a command that cannot start is an error, then a close with no code', async () => {
    const ended = await run({ file: '/nonexistent/tool', args: [] });
    assert.match(ended.error ?? '', /nonexistent\/tool: No such file/);
    assert.equal(ended.code, null);
  });

  test('kill and abort signal the process; it ends by that signal', async () => {
    const killed = await run({ file: 'sleep', args: ['30'] }, undefined, (child) => setTimeout(() => child.kill('SIGKILL'), 100));
    assert.deepEqual([killed.code, killed.signal], [null, 'SIGKILL']);
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    const aborted = await run({ file: 'sleep', args: ['30'], signal: controller.signal });
    assert.deepEqual([aborted.code, aborted.signal], [null, 'SIGTERM']);
    // Signals the terminal sends the whole group reach the children with their default action.
    const interrupted = await run({ file: '/bin/sh', args: ['-c', 'kill -INT $$; sleep 5'] });
    assert.equal(interrupted.signal, 'SIGINT');
  });

  test('a spawner that died is replaced; what it ran ends in an error, not a hang', async () => {
    startSpawner();
    const pid = spawnerPid();
    assert.ok(pid !== undefined);
    const running = run({ file: '/bin/sh', args: ['-c', 'sleep 1; echo still streamed'] });
    await sleep(100);
    process.kill(pid, 'SIGKILL');
    // Its output still arrives; its exit status cannot.
    const ended = await running;
    assert.match(ended.error ?? '', /spawner exited/);
    assert.equal(ended.stdout, 'still streamed\n');
    const next = await run({ file: '/bin/sh', args: ['-c', 'echo $PPID; exit 4'] });
    assert.equal(next.code, 4);
    const replaced = spawnerPid();
    assert.ok(replaced !== undefined && replaced !== pid);
    assert.equal(Number(next.stdout), replaced);
  });

  test('with no perl, node spawns: same results', async () => {
    const module = new URL('../../../src/spawner.js', import.meta.url).href;
    const script = `import('${module}').then((m) => {
      const child = m.spawnChild({ file: '/bin/sh', args: ['-c', 'read x; echo "$x $PPID" ; exit 5'], stdin: 'pipe', stdout: 'pipe', stderr: 'pipe' });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.stdin.end('hello\\n');
      child.once('close', (code) => console.log(JSON.stringify({ code, out, spawner: m.spawnerPid() ?? null })));
    });`;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'], env: { PATH: '/nonexistent' } });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    await new Promise((resolve) => child.once('close', resolve));
    assert.deepEqual(JSON.parse(output), { code: 5, out: `hello ${child.pid}\n`, spawner: null });
  });

  test('the spawner exits when the process that started it dies', async () => {
    const script = `import('${new URL('../../../src/spawner.js', import.meta.url).href}').then((m) => { m.startSpawner(); console.log(m.spawnerPid()); setInterval(() => {}, 1000); });`;
    const parent = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const line = await new Promise<string>((resolve) => parent.stdout.once('data', (chunk: Buffer) => resolve(chunk.toString())));
    const pid = Number(line);
    assert.ok(pid > 0 && alive(pid), 'running');
    parent.kill('SIGKILL');
    for (let i = 0; i < 100 && alive(pid); i++) await sleep(20);
    assert.equal(alive(pid), false, 'gone with its parent');
  });
});
