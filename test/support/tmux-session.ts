/**
 * A real terminal for tests: a command run in a detached tmux session of a
 * fixed size, on a tmux server of its own (its own socket), whose screen is
 * read with `tmux capture-pane -p`: the text a person would see.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';

/** Options of {@link startTmux}. */
export interface TmuxOptions {
  readonly columns: number;
  readonly rows: number;
  /** Variables set for the command (tmux's `-e`), on top of the test's environment. */
  readonly env?: Readonly<Record<string, string>>;
}

/** One tmux session running one command. */
export interface TmuxSession {
  /**
   * The visible screen, one string per row, trailing blanks removed, a line
   * the terminal wrapped joined again; with `escapes`, the colours and
   * attributes as escape sequences.
   */
  capture(options?: { readonly escapes?: boolean }): Promise<string>;
  /** Captures until `ready` accepts the screen (every 100 ms), or fails with the last screen after `timeoutMs`. */
  waitFor(ready: (screen: string) => boolean, timeoutMs?: number): Promise<string>;
  /** Types `keys` as tmux's send-keys takes them: text as it is, `Enter`, `C-c`, ... */
  sendKeys(...keys: string[]): Promise<void>;
  /** Changes the terminal's size (the program gets SIGWINCH). */
  resize(columns: number, rows: number): Promise<void>;
  /** Ends the session and its server. */
  close(): Promise<void>;
}

let sessions = 0;

/**
 * Runs `command` (argv) in a new tmux session. When the command ends, the
 * pane stays (remain-on-exit), so its last screen can still be read; the
 * exit status is printed as `[exit N]` on the last line.
 */
export async function startTmux(command: readonly string[], options: TmuxOptions): Promise<TmuxSession> {
  const socket = `kiln-test-${process.pid}-${++sessions}`;
  const tmux = (...args: string[]) => execa('tmux', ['-L', socket, '-f', '/dev/null', ...args]);
  const env = Object.entries(options.env ?? {}).flatMap(([k, v]) => ['-e', `${k}=${v}`]);
  const quoted = command.map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(' ');
  // The shell prints the status, then waits, so the pane keeps the final screen until close().
  const script = `${quoted}; echo "[exit $?]"; sleep 3600`;
  await tmux('new-session', '-d', '-s', 'kiln', '-x', String(options.columns), '-y', String(options.rows), ...env, 'sh', '-c', script);
  const capture = async (o: { readonly escapes?: boolean } = {}): Promise<string> => (await tmux('capture-pane', '-p', '-J', ...(o.escapes === true ? ['-e'] : []), '-t', 'kiln')).stdout;
  return {
    capture,
    async waitFor(ready, timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const screen = await capture();
        if (ready(screen)) return screen;
        if (Date.now() > deadline) throw new Error(`the terminal never showed what was awaited; last screen:\n${screen}`);
        await sleep(100);
      }
    },
    async sendKeys(...keys) {
      await tmux('send-keys', '-t', 'kiln', ...keys);
    },
    async resize(columns, rows) {
      await tmux('resize-window', '-t', 'kiln', '-x', String(columns), '-y', String(rows));
    },
    async close() {
      await tmux('kill-server').catch(() => undefined);
    },
  };
}
