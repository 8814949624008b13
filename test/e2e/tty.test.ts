/**
 * The progress a person sees, in a real terminal: kiln runs in a tmux pane
 * of a fixed size (`--progress auto` on a terminal is the live tty view),
 * and the pane's text is read during a long step and after the build. Off a
 * terminal, plain progress ends with the same summary.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { startTmux, type TmuxSession } from '../support/tmux-session.js';
import { KILN, kiln, removeDir, tempDir } from './harness.js';
import { busyboxOps, shStep } from './workers.js';

/** A step that prints `count` numbered lines, one every `delay` seconds. */
function printer(name: string, count: number, delay: number, then = 'true'): Record<string, unknown> {
  const step = shStep(`i=1; while [ $i -le ${count} ]; do echo "line $i of ${name}"; sleep ${delay}; i=$((i+1)); done; ${then}`);
  return { ...step, metadata: { description: { 'llb.customname': name } } };
}

describe('tty progress in a terminal', () => {
  let work: string;
  let root: string;
  const sessions: TmuxSession[] = [];
  before(async () => {
    work = await tempDir('tty');
    root = join(work, 'root');
  });
  after(async () => {
    for (const s of sessions) await s.close();
    await removeDir(work);
  });

  /** Writes a definition whose result is `result`, on the busybox rootfs. */
  const definition = async (file: string, ops: Record<string, unknown>, result: string): Promise<string> => {
    const path = join(work, file);
    await writeFile(path, JSON.stringify({ version: 1, ops: { ...(await busyboxOps()), ...ops }, result }));
    return path;
  };

  const inTerminal = async (args: readonly string[], env: Record<string, string> = {}): Promise<TmuxSession> => {
    const session = await startTmux([process.execPath, KILN, ...args], { columns: 100, rows: 30, env: { KILN_LOG: 'warn', ...env } });
    sessions.push(session);
    return session;
  };

  test('a running step shows its time and last lines, then every step is one line, and the summary names the output digest', async () => {
    const def = await definition('slow.json', { slow: printer('slow printer', 40, 0.15, 'echo done > /out/done') }, 'slow');
    const archive = join(work, 'out.tar');
    const term = await inTerminal(['build', def, '--root', root, '--local', 'tools=/bin', '-o', `type=oci,dest=${archive}`]);

    // During the long step: its line with the elapsed time, and its last 6 lines of output under it.
    const during = await term.waitFor((s) => /line 1[0-9] of slow printer/.test(s));
    const rows = during.split('\n');
    const running = rows.findIndex((r) => r.startsWith('=> [slow printer]'));
    assert.ok(running >= 0, `the running step is shown:\n${during}`);
    assert.match(rows[running] ?? '', /^=> \[slow printer\] +\d+\.\ds$/, 'its elapsed time at the right');
    assert.match(rows[running - 1] ?? '', /^\[\+\] Building \d+\.\ds \(\d+ done, 1 running\)$/, 'the headline above it');
    const shown = rows.slice(running + 1).filter((r) => r.startsWith('   | '));
    assert.equal(shown.length, 6, `six output lines:\n${during}`);
    const numbers = shown.map((r) => Number(/line (\d+) of/.exec(r)?.[1]));
    assert.deepEqual(numbers, numbers.map((_, i) => (numbers[0] ?? 0) + i), 'the last lines, in order');
    assert.match(during, /^=> \[busybox --install -s \/bin\] +DONE \d+\.\ds$/m, 'finished steps above, one line each');

    // After the build: every step collapsed, no output lines, the summary with the image digest.
    const end = await term.waitFor((s) => s.includes('[exit '));
    assert.match(end, /\[exit 0\]/, end);
    assert.match(end, /^=> \[slow printer\] +DONE \d+\.\ds$/m);
    assert.match(end, /^=> \[export oci .*out\.tar\] +DONE \d+\.\ds$/m);
    assert.ok(!end.includes('   | line'), `no output lines are left:\n${end}`);
    assert.ok(!end.includes('[+] Building'), 'the live headline is cleared');
    assert.match(end, /^Built in \d+\.\ds: 4 steps run, 0 cached$/m);
    const { stdout: index } = await execa('tar', ['-xOf', archive, 'index.json']);
    const digest = (JSON.parse(index) as { manifests: { digest: string }[] }).manifests[0]?.digest ?? '';
    assert.match(end, new RegExp(`^  oci .*out\\.tar  ${digest}$`, 'm'), 'the digest of the manifest in the archive');
  });

  test('a failed step keeps its last lines (KILN_TTY_LOG_LINES), cached steps say so, NO_COLOR gives no colours', async () => {
    const def = await definition('fail.json', { broken: printer('broken step', 5, 0.01, 'echo "it broke" >&2; exit 3') }, 'broken');
    const term = await inTerminal(['build', def, '--root', root, '--local', 'tools=/bin'], { KILN_TTY_LOG_LINES: '2', NO_COLOR: '1' });
    const end = await term.waitFor((s) => s.includes('[exit '));
    assert.match(end, /\[exit 1\]/, end);
    assert.match(end, /^=> \[busybox --install -s \/bin\] +CACHED$/m);
    assert.match(end, /^=> ERROR \[broken step\] +\d+\.\ds\n {3}\| line 5 of broken step\n {3}\| it broke\n {3}ERROR: process "\/bin\/sh -c/m);
    assert.match(end, /^Failed in \d+\.\ds: 0 steps run, 1 cached, 1 failed$/m);
    // tmux's -e capture keeps the colours the program asked for: none.
    const colored = await term.capture({ escapes: true });
    assert.ok(!colored.includes('\u001b['), `no escape sequences with NO_COLOR:\n${JSON.stringify(colored)}`);
  });

  test('a resized terminal gets a frame of its new width', async () => {
    const def = await definition('resize.json', { wide: printer('resized step', 60, 0.1) }, 'wide');
    const term = await inTerminal(['build', def, '--root', root, '--local', 'tools=/bin']);
    await term.waitFor((s) => /line \d+ of resized step/.test(s));
    await term.resize(60, 20);
    const narrow = await term.waitFor((s) => /^=> \[resized step\] {20,}\d+\.\ds$/m.test(s) && s.split('\n').some((r) => /^=> \[resized step\] +\d+\.\ds$/.test(r) && r.length <= 60));
    for (const row of narrow.split('\n')) assert.ok(row.length <= 60, `a row wider than the terminal: ${JSON.stringify(row)}`);
    const end = await term.waitFor((s) => s.includes('[exit '));
    assert.match(end, /^=> \[resized step\] +DONE \d+\.\ds$/m);
  });

  test('plain progress, off a terminal, ends with the summary and the image digest', async () => {
    const def = await definition('plain.json', { quick: printer('quick step', 2, 0) }, 'quick');
    const archive = join(work, 'plain.tar');
    const r = await kiln(['build', def, '--root', root, '--local', 'tools=/bin', '-o', `type=oci,dest=${archive}`]);
    assert.equal(r.exitCode, 0, r.stderr);
    const { stdout: index } = await execa('tar', ['-xOf', archive, 'index.json']);
    const digest = (JSON.parse(index) as { manifests: { digest: string }[] }).manifests[0]?.digest ?? '';
    const tail = r.stderr.trimEnd().split('\n').slice(-2);
    assert.match(tail[0] ?? '', /^Built in \d+\.\ds: 1 step run, 3 cached$/);
    assert.equal(tail[1], `  oci ${archive}  ${digest}`);
  });
});
