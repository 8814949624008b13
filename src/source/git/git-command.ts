/**
 * Running the `git` binary for git sources. Each call gets a controlled
 * environment: no system or user git config (a user's `insteadOf` or
 * credential helper must not change what a build fetches), no prompts, C
 * locale for parseable messages, plus the credentials of the op
 * (credentials.ts), which travel in the environment and never in argv, so
 * `ps` never shows them. Failures become E_GIT_SOURCE errors naming the op
 * and quoting git, with any `user:password@` masked.
 */
import type { execa as execaFunction } from 'execa';
import { findInPath } from '../../command.js';
import { ERROR_CODES, OpError } from '../../errors.js';
import { maskUrlCredentials } from '../../llb/op-name.js';

type Execa = typeof execaFunction;
let execaLoaded: Promise<Execa> | undefined;

/** execa, imported on first use: only builds with git sources pay for loading it. */
function loadExeca(): Promise<Execa> {
  execaLoaded ??= import('execa').then((m) => m.execa);
  return execaLoaded;
}

let launcherFound: Promise<readonly string[]> | undefined;

/**
 * How git is started: under `setpriv --pdeathsig KILL` (util-linux, essential
 * on Debian), so that git dies with a kiln that is killed. An orphaned git
 * would go on writing into the bare repository after kiln's lock on it died
 * with kiln, beside the next kiln that took the lock, and that one removes
 * the git lock files it finds there as a killed git's. Without setpriv, git
 * runs directly.
 */
function gitLauncher(): Promise<readonly string[]> {
  launcherFound ??= findInPath('setpriv').then((setpriv) => (setpriv === undefined ? ['git'] : [setpriv, '--pdeathsig', 'KILL', '--', 'git']));
  return launcherFound;
}

/** What setpriv prints, and exits 127 with, when it cannot find git. */
const NO_GIT = /^setpriv: failed to execute git: No such file or directory/m;

/** Where a git failure is reported. */
export interface GitSite {
  readonly op: string;
  readonly field: string;
  /** How the remote is named in messages (masked). */
  readonly remote: string;
  /** Added to a refused request's error: why it may have been refused (an auth secret not given). */
  readonly authHint?: string;
}

/** One git invocation. */
export interface GitCall {
  readonly args: readonly string[];
  readonly cwd?: string;
  /** Added to the base environment (credentials, GIT_INDEX_FILE, GIT_DIR). */
  readonly env?: Readonly<Record<string, string>>;
  /** Written to git's stdin (else stdin is closed). */
  readonly input?: string;
  readonly signal: AbortSignal;
  /** What was being done, for the error: `fetching main`. */
  readonly action: string;
  readonly site: GitSite;
}

/** What a failed git call reports. */
export class GitCommandError extends OpError {
  /** git's stderr, masked. */
  readonly stderr: string;
  constructor(call: GitCall, stderr: string, cause: unknown) {
    const detail = lastLines(stderr) || (cause instanceof Error ? maskUrlCredentials(cause.message) : 'git failed');
    super(ERROR_CODES.GIT_SOURCE, `git source ${call.site.remote}: ${call.action} failed: ${detail}${hintFor(stderr, call.site)}`, { op: call.site.op, field: call.site.field, cause });
    this.name = 'GitCommandError';
    this.stderr = maskUrlCredentials(stderr);
  }
}

/** What may fix a failure git describes in `stderr`, in parentheses, or nothing. */
function hintFor(stderr: string, site: GitSite): string {
  if (site.authHint !== undefined && /Authentication failed|could not read Username|returned error: 40[13]/.test(stderr)) return ` (${site.authHint})`;
  if (/certificate verification failed|SSL certificate problem|certificate has expired/.test(stderr)) return ' (a private CA can be trusted with NODE_EXTRA_CA_CERTS=FILE)';
  return '';
}

/** git's advice after a failed connection, which says nothing the line before it did not. */
const BOILERPLATE = ['Please make sure you have the correct access rights', 'and the repository exists.'];

/** The last few non-empty lines of git's stderr, masked, on one line. */
function lastLines(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('hint:') && !BOILERPLATE.includes(l));
  return maskUrlCredentials(lines.slice(-3).join('; '));
}

/** The environment every git call starts from. */
function baseEnv(): Record<string, string> {
  // Not inherited: SSH_AUTH_SOCK (the only agent is the one an op names, credentials.ts), GIT_* of the caller.
  const env: Record<string, string> = {
    PATH: process.env['PATH'] ?? '/usr/local/bin:/usr/bin:/bin',
    HOME: process.env['HOME'] ?? '/',
    LC_ALL: 'C',
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    GIT_TERMINAL_PROMPT: '0',
    GIT_ASKPASS: 'true',
    SSH_ASKPASS: 'true',
  };
  const tmp = process.env['TMPDIR'];
  if (tmp !== undefined) env['TMPDIR'] = tmp;
  return env;
}

/** Runs git; resolves with its stdout, or rejects with a GitCommandError (or the signal's reason). */
export async function git(call: GitCall): Promise<string> {
  const execa = await loadExeca();
  call.signal.throwIfAborted();
  try {
    const [file = 'git', ...prefix] = await gitLauncher();
    const result = await execa(file, [...prefix, ...call.args], {
      ...(call.cwd === undefined ? {} : { cwd: call.cwd }),
      env: { ...baseEnv(), ...call.env },
      extendEnv: false,
      ...(call.input === undefined ? { stdin: 'ignore' as const } : { input: call.input }),
      cancelSignal: call.signal,
      forceKillAfterDelay: 3000,
      stripFinalNewline: true,
      maxBuffer: 256 * 1024 * 1024,
    });
    return result.stdout;
  } catch (err) {
    if (call.signal.aborted) throw call.signal.reason;
    const stderr = typeof (err as { stderr?: unknown }).stderr === 'string' ? (err as { stderr: string }).stderr : '';
    if (NO_GIT.test(stderr) || (err as { code?: unknown }).code === 'ENOENT') {
      throw new OpError(ERROR_CODES.GIT_SOURCE, `git source ${call.site.remote}: the git command is not installed (on Debian: apt-get install git)`, { op: call.site.op, field: call.site.field, cause: err });
    }
    throw new GitCommandError(call, stderr, err);
  }
}
