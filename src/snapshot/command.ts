/**
 * Running the system commands snapshots need (mount, umount, cp, tar,
 * mknod), failing with a SNAPSHOT error that says what could not be done.
 * The process handling itself is the base's (src/command.ts).
 */
import { type Command, exec, type Outcome, start } from '../command.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import { explainNoSpace } from '../fs/no-space.js';

export { type Command, exec, type Outcome };

/**
 * Runs `cmd` and fails with a SNAPSHOT error that says what could not be
 * done (`action`) and what the command complained.
 */
export async function run(action: string, cmd: Command): Promise<void> {
  check(action, await exec(cmd));
}

/** Runs `from | to`; fails like `run` if either fails. */
export async function runPiped(action: string, from: Command, to: Command): Promise<void> {
  const source = start({ ...from, nodeSpawn: true }, 'pipe');
  const sink = start(to, 'ignore', source.stdout);
  // The sink has its own copy of the pipe; ours would keep the source from
  // ever reporting 'close'.
  source.stdout?.destroy();
  const [a, b] = await Promise.all([source.done, sink.done]);
  check(action, a);
  check(action, b);
}

function check(action: string, outcome: Outcome): void {
  if (outcome.code === 0) return;
  const detail = outcome.stderr.trim() || `exit code ${String(outcome.code)}`;
  throw new KilnError(ERROR_CODES.SNAPSHOT, explainNoSpace(`${action}: ${detail}`));
}
