/**
 * `kiln debug [ID] --vertex NAME`: a shell on the result of one step of a
 * recorded build (the history), as `kiln build -i` opens one in a failed
 * step: the step's result as a writable root (a fresh snapshot, discarded
 * after), an exec step's env, working directory, user and network mode.
 */
import { Session } from '../client/session.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import { checkGlobalOptions, type GlobalOptions, sessionOptions } from './global-options.js';
import { type InteractiveShell, interactiveShell } from './interactive.js';

/** The options of `kiln debug`. */
export interface DebugCommandOptions extends GlobalOptions {
  readonly vertex?: string;
  readonly shell?: string;
  readonly worker?: string;
}

export async function debugCommand(id: string | undefined, options: DebugCommandOptions): Promise<void> {
  checkGlobalOptions(options);
  if (options.vertex === undefined) throw new KilnError(ERROR_CODES.USAGE, 'kiln debug needs --vertex NAME: the step whose result to open (kiln history inspect ID lists them)');
  // The same terminal checks as -i: before anything is opened.
  let shell: InteractiveShell | undefined;
  try {
    shell = interactiveShell({ interactive: true, ...(options.shell === undefined ? {} : { shell: options.shell }) }, 'debug');
  } catch (err) {
    if (err instanceof KilnError) throw new KilnError(err.code, err.message.replace('-i (--interactive)', 'kiln debug').replace(', or leave out -i', ''));
    throw err;
  }
  if (shell === undefined) return;
  const session = await Session.open(sessionOptions(options));
  const abort = new AbortController();
  const onHangup = (): void => abort.abort(new KilnError(ERROR_CODES.CANCELLED, 'the terminal closed'));
  process.once('SIGHUP', onHangup);
  try {
    const status = await session.debugShell({
      ...(id === undefined ? {} : { id }),
      vertex: options.vertex,
      terminal: shell.terminal,
      args: shell.args,
      ...(options.worker === undefined ? {} : { worker: options.worker }),
      signal: abort.signal,
    });
    // The shell's own exit status is kiln debug's: a script can run `kiln debug ... --shell 'sh -c test'`.
    process.exitCode = status.signal === undefined ? status.exitCode : 128;
  } finally {
    process.off('SIGHUP', onHangup);
    await session.close();
  }
}
