/**
 * End-to-end harness: runs the real `kiln` CLI (bin/kiln.js) as a user would,
 * each test on its own temporary root, and parses `--progress rawjson`.
 */
import assert from 'node:assert/strict';
import { execa } from 'execa';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (tests run from dist/test/e2e). */
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const KILN = join(REPO, 'bin', 'kiln.js');
export const FIXTURES = join(REPO, 'test', 'fixtures');
export const EXAMPLES = join(REPO, 'llb-examples');

export interface KilnRun {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs kiln with args; never throws on a non-zero exit. */
export async function kiln(args: readonly string[], options: { input?: string; env?: Record<string, string> } = {}): Promise<KilnRun> {
  const r = await execa(process.execPath, [KILN, ...args], {
    reject: false,
    ...(options.input === undefined ? { stdin: 'ignore' } : { input: options.input }),
    env: { KILN_LOG: 'warn', ...options.env },
    timeout: 120_000,
  });
  return { exitCode: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Starts kiln without waiting (for kill and concurrency tests). */
export function startKiln(args: readonly string[], options: { env?: Record<string, string> } = {}) {
  // No forced SIGKILL after a kill(): tests send the signals they mean.
  return execa(process.execPath, [KILN, ...args], { reject: false, stdin: 'ignore', forceKillAfterDelay: false, ...(options.env === undefined ? {} : { env: options.env }) });
}

/** A vertex line of `--progress rawjson`. */
export interface RawVertex {
  readonly type: 'vertex';
  readonly digest: string;
  readonly name: string;
  readonly inputs: readonly string[];
  readonly started?: string;
  readonly completed?: string;
  readonly cached: boolean;
  readonly error?: string;
  readonly progressGroup?: { readonly id: string; readonly name: string };
}

/** The final state of each vertex reported in rawjson output (by digest). */
export function vertices(stderr: string): Map<string, RawVertex> {
  const out = new Map<string, RawVertex>();
  for (const line of stderr.split('\n')) {
    if (!line.startsWith('{')) continue;
    const event = JSON.parse(line) as { type?: string };
    if (event.type !== 'vertex') continue;
    const v = event as RawVertex;
    out.set(v.digest, { ...out.get(v.digest), ...v });
  }
  return out;
}

/** Final vertex states keyed by name. */
export function verticesByName(stderr: string): Map<string, RawVertex> {
  return new Map([...vertices(stderr).values()].map((v) => [v.name, v]));
}

/** A temp dir removed by the returned cleanup. */
export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `kiln-e2e-${prefix}-`));
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
}

/** Mount points under `dir` that are still mounted. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m === dir || m.startsWith(`${dir}/`));
}

/** Asserts two trees hold the same entries, modes, link targets and contents. */
export async function assertSameTree(a: string, b: string): Promise<void> {
  const { stdout: la } = await execa('find', ['.', '-printf', '%p %M %U:%G %s %l\n'], { cwd: a });
  const { stdout: lb } = await execa('find', ['.', '-printf', '%p %M %U:%G %s %l\n'], { cwd: b });
  assert.equal(lb.split('\n').sort().join('\n'), la.split('\n').sort().join('\n'));
  const { stdout: sa } = await execa('sh', ['-c', 'find . -type f -print0 | sort -z | xargs -0r sha256sum'], { cwd: a });
  const { stdout: sb } = await execa('sh', ['-c', 'find . -type f -print0 | sort -z | xargs -0r sha256sum'], { cwd: b });
  assert.equal(sb, sa);
}

/**
 * The error line of a failed `kiln build` (`error: ...`), the last one:
 * a failed build that got as far as running ends with a pointer at its
 * full log after it.
 */
export function errorLine(stderr: string): string {
  return stderr.trimEnd().split('\n').filter((l) => l.startsWith('error: ')).at(-1) ?? '';
}
