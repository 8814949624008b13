/**
 * The checks of `kiln build -i` made before anything runs, and the hook's
 * order of things around the shell, with a fake failure and renderer.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Writable } from 'node:stream';
import { interactiveShell, shellOnFailure, type InteractiveShell } from '../../../src/cli/interactive.js';
import { ERROR_CODES, ExecError, KilnError } from '../../../src/errors.js';
import type { FailedExec, ShellOptions } from '../../../src/ops/types.js';
import type { ProgressRenderer } from '../../../src/progress/index.js';

const usage = (message: string) => (err: unknown) => err instanceof KilnError && err.code === ERROR_CODES.USAGE && err.message === message;

describe('kiln build -i checks', () => {
  it('is off without -i, and --shell alone is a usage error', () => {
    assert.equal(interactiveShell({}, 'def.json'), undefined);
    assert.throws(() => interactiveShell({ shell: '/bin/bash' }, 'def.json'), usage('--shell is the command of the -i shell: give -i (--interactive) too'));
  });

  it('refuses a definition on stdin, and stdin that is not a terminal', () => {
    assert.throws(() => interactiveShell({ interactive: true }, '-'), usage('-i (--interactive) takes stdin for the shell: give the definition as a file, not -'));
    // The test runner's stdin is not a terminal.
    assert.throws(
      () => interactiveShell({ interactive: true }, 'def.json'),
      usage('-i (--interactive) needs a terminal on stdin for the shell, and stdin is not a terminal (run kiln from a terminal, or leave out -i)'),
    );
  });
});

describe('the -i hook', () => {
  const failure = (op: string, shells: ShellOptions[], order: string[]): FailedExec => ({
    op,
    error: new ExecError({ op, args: ['false'], exitCode: 1, tail: ['it broke'] }),
    shell: async (options) => {
      shells.push(options);
      order.push(`shell ${op}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
      return { exitCode: 0 };
    },
  });

  it('pauses progress, says what failed, runs one shell, resumes; a second failure waits for it and gets none', async () => {
    const order: string[] = [];
    let text = '';
    const output = Object.assign(
      new Writable({
        write(chunk: Buffer, _enc, done) {
          text += chunk.toString();
          done();
        },
      }),
      { fd: 1 },
    );
    const shell = { terminal: { input: process.stdin, output }, args: ['/bin/sh', '-l'] } as unknown as InteractiveShell;
    const progress = {
      emit: () => {},
      close: () => Promise.resolve(),
      pause: () => {
        order.push('pause');
        return Promise.resolve();
      },
      resume: () => void order.push('resume'),
    } satisfies ProgressRenderer;
    const hook = shellOnFailure(shell, progress, new AbortController().signal);
    const shells: ShellOptions[] = [];
    const first = hook(failure('a', shells, order));
    const second = hook(failure('b', shells, order)).then(() => void order.push('b returns'));
    await Promise.all([first, second]);
    assert.deepEqual(order, ['pause', 'shell a', 'resume', 'b returns']);
    assert.deepEqual(shells[0]?.args, ['/bin/sh', '-l']);
    assert.match(text, /^\nkiln: op "a" failed: process "false" did not complete successfully: exit code 1\n {2}last lines of output:\n {2}> it broke\nkiln: opening \/bin\/sh -l in the failed step; exit it to end the build\nkiln: the shell exited with code 0\n$/);
  });
});
