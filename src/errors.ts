/**
 * One error hierarchy for kiln. Every failure that reaches a user is a
 * KilnError with a stable `code`; only `cli/` turns these into text and exit
 * codes. docs/errors.md lists the codes and what to do about each.
 */

/** Every error code kiln can report. Add new codes here and in docs/errors.md. */
export const ERROR_CODES = {
  /** The JSON LLB file is malformed or breaks a rule of the spec. */
  INVALID_DEFINITION: 'E_INVALID_DEFINITION',
  /** The definition file could not be read. */
  DEFINITION_READ: 'E_DEFINITION_READ',
  /** Command-line usage is wrong (unknown flag, bad value). */
  USAGE: 'E_USAGE',
  /** kiln's config file (kiln.toml, `--config`) cannot be read, is not TOML, or has an unknown key or a bad value. */
  CONFIG: 'E_CONFIG',
  /** A file action's path does not exist (and the action did not allow that). */
  PATH_NOT_FOUND: 'E_PATH_NOT_FOUND',
  /** A file action would create something that already exists. */
  PATH_EXISTS: 'E_PATH_EXISTS',
  /** A path component that must be a directory is not one. */
  NOT_A_DIRECTORY: 'E_NOT_A_DIRECTORY',
  /** A file action failed for another reason (permissions, bad owner name, ...). */
  FILE_ACTION: 'E_FILE_ACTION',
  /** A `local://NAME` source has no `--local NAME=DIR`, or DIR is unusable. */
  LOCAL_SOURCE: 'E_LOCAL_SOURCE',
  /** An http(s):// source failed: the server refused (4xx) or failed (5xx after retries), the content did not match http.checksum, TLS or the network failed. */
  HTTP_SOURCE: 'E_HTTP_SOURCE',
  /** A git source could not be fetched or checked out (unreachable remote, unknown ref, missing subdir, refused credentials). */
  GIT_SOURCE: 'E_GIT_SOURCE',
  /** The source scheme is not supported by this build of kiln. */
  UNSUPPORTED_SOURCE: 'E_UNSUPPORTED_SOURCE',
  /** An exec op was asked for but no worker has an executor. */
  NO_EXECUTOR: 'E_NO_EXECUTOR',
  /** The container runtime (runc) is missing, or could not create, start or clean up a container. */
  EXECUTOR: 'E_EXECUTOR',
  /** Container networking could not be set up (CNI plugins, network namespaces, DNS configuration). */
  NETWORK: 'E_NETWORK',
  /** No worker can run an op (none available, or constraints reject all). */
  NO_WORKER: 'E_NO_WORKER',
  /** A process in an exec op exited with a code outside validExitCodes. */
  EXEC_FAILED: 'E_EXEC_FAILED',
  /** An exec op needs a secret (--secret) that was not given or could not be read. */
  SECRET: 'E_SECRET',
  /** An exec op needs an SSH agent (--ssh) that was not given, or the agent could not be reached or started. */
  SSH: 'E_SSH',
  /** The build needs an entitlement (--allow) the caller did not grant. */
  ENTITLEMENT: 'E_ENTITLEMENT',
  /** Snapshot preparation, mounting or commit failed. */
  SNAPSHOT: 'E_SNAPSHOT',
  /** The cache store (kiln's root) could not be opened or written. */
  CACHE_STORE: 'E_CACHE_STORE',
  /** A blob in kiln's content store is missing, or content did not match its digest or size. */
  CONTENT: 'E_CONTENT',
  /** A registry refused or failed a request (auth, not found, server error, unreachable). */
  REGISTRY: 'E_REGISTRY',
  /** An image could not be used: bad reference, no manifest for the platform, malformed manifest or config. */
  IMAGE: 'E_IMAGE',
  /** `kiln images rm NAME`: no image is kept under NAME. */
  IMAGE_NOT_FOUND: 'E_IMAGE_NOT_FOUND',
  /** `kiln history inspect|logs ID`: no build of the history has that id (or a vertex of it that name). */
  HISTORY_NOT_FOUND: 'E_HISTORY_NOT_FOUND',
  /** A layer tar is malformed or hostile (paths outside the root, links that escape). */
  LAYER: 'E_LAYER',
  /** Writing an output (local dir, tar) failed. */
  OUTPUT: 'E_OUTPUT',
  /** `--export-cache` failed (and ignore-error=true was not given). */
  CACHE_EXPORT: 'E_CACHE_EXPORT',
  /** `--import-cache ...,ignore-error=false` could not read the cache (missing, unreachable, not a kiln cache, digest mismatch). */
  CACHE_IMPORT: 'E_CACHE_IMPORT',
  /** The build was cancelled (signal or AbortSignal). */
  CANCELLED: 'E_CANCELLED',
  /** A bug in kiln: please report it with --debug output. */
  INTERNAL: 'E_INTERNAL',
} as const;

export type ErrorCode = (typeof ERROR_CODES)[keyof typeof ERROR_CODES];

/** Options shared by every KilnError. */
export interface KilnErrorOptions {
  /** The op (vertex name in the JSON LLB file) the error concerns. */
  readonly op?: string;
  /** The field (JSON path, e.g. `ops.a.file.actions[0].mkdir.path`) it concerns. */
  readonly field?: string;
  readonly cause?: unknown;
}

/** Base class of every error kiln reports. */
export class KilnError extends Error {
  readonly code: ErrorCode;
  readonly op: string | undefined;
  readonly field: string | undefined;

  constructor(code: ErrorCode, message: string, options: KilnErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'KilnError';
    this.code = code;
    this.op = options.op;
    this.field = options.field;
  }
}

/** One problem found in a JSON LLB file, located by its JSON path. */
export interface Diagnostic {
  /** JSON path such as `ops.compile.exec.mounts[1].dest` (`(root)` for the whole document). */
  readonly path: string;
  readonly message: string;
}

/** The definition is invalid; carries every problem found, not only the first. */
export class ValidationError extends KilnError {
  readonly diagnostics: readonly Diagnostic[];
  /** The file the definition came from, when known (for messages). */
  readonly file: string | undefined;

  constructor(diagnostics: readonly Diagnostic[], file?: string) {
    const first = diagnostics[0];
    const where = file === undefined ? '' : `${file}: `;
    const head = first === undefined ? 'invalid definition' : first.path === '' ? first.message : `${first.path}: ${first.message}`;
    const more = diagnostics.length > 1 ? ` (and ${diagnostics.length - 1} more problem${diagnostics.length > 2 ? 's' : ''})` : '';
    super(ERROR_CODES.INVALID_DEFINITION, `${where}${head}${more}`, first === undefined ? {} : { field: first.path });
    this.name = 'ValidationError';
    this.diagnostics = diagnostics;
    this.file = file;
  }
}

/** Options of an error raised while an op ran. */
export interface OpErrorOptions extends KilnErrorOptions {
  readonly op: string;
}

/** An op failed while it ran; wraps the cause with the op's name. */
export class OpError extends KilnError {
  override readonly op: string;
  constructor(code: ErrorCode, message: string, options: OpErrorOptions) {
    super(code, message, options);
    this.name = 'OpError';
    this.op = options.op;
  }
}

/**
 * What a build needs that only its caller can give: a secret, an SSH agent,
 * or an entitlement. The library says what is missing, as data; the CLI
 * says which flag gives it.
 */
export type Grant =
  | { readonly kind: 'secret'; readonly id: string }
  /** `for`: what needs the agent; an ssh mount can be marked optional instead, a git source cannot. */
  | { readonly kind: 'ssh'; readonly id: string; readonly for: 'mount' | 'git source' }
  | { readonly kind: 'entitlement'; readonly entitlement: string };

/** Options of a MissingGrantError. */
export interface MissingGrantErrorOptions extends OpErrorOptions {
  readonly grant: Grant;
}

/** An op needs a {@link Grant} the caller did not give; refused before anything runs. */
export class MissingGrantError extends OpError {
  readonly grant: Grant;
  constructor(code: ErrorCode, message: string, options: MissingGrantErrorOptions) {
    super(code, message, options);
    this.name = 'MissingGrantError';
    this.grant = options.grant;
  }
}

/**
 * A cache given with `ignore-error=false` could not be used: `cache` names it
 * (`registry HOST/REPO:TAG`, `local DIR`), `reason` says why.
 */
export class CacheImportError extends KilnError {
  readonly cache: string;
  readonly reason: string;
  constructor(cache: string, reason: string, cause?: unknown) {
    super(ERROR_CODES.CACHE_IMPORT, `cache import from ${cache} failed (ignore-error=false): ${reason}`, cause === undefined ? {} : { cause });
    this.name = 'CacheImportError';
    this.cache = cache;
    this.reason = reason;
  }
}

/** Options of an ExecError. */
export interface ExecErrorOptions extends OpErrorOptions {
  readonly args: readonly string[];
  readonly exitCode: number;
  /** The last lines the process wrote (stdout and stderr, interleaved). */
  readonly tail: readonly string[];
  /** What kiln knows that may explain the failure (e.g. the container had no network), added to the message. */
  readonly note?: string;
}

/** A process exited with a code outside the op's validExitCodes. */
export class ExecError extends OpError {
  readonly args: readonly string[];
  readonly exitCode: number;
  readonly tail: readonly string[];
  constructor(options: ExecErrorOptions) {
    const note = options.note === undefined ? '' : ` (${options.note})`;
    super(ERROR_CODES.EXEC_FAILED, `process "${options.args.join(' ')}" did not complete successfully: exit code ${options.exitCode}${note}`, options);
    this.name = 'ExecError';
    this.args = options.args;
    this.exitCode = options.exitCode;
    this.tail = options.tail;
  }
}

/** Turns anything thrown into a KilnError, keeping KilnErrors as they are. */
export function asKilnError(err: unknown, fallback: ErrorCode = ERROR_CODES.INTERNAL): KilnError {
  if (err instanceof KilnError) return err;
  if (err instanceof Error) return new KilnError(fallback, err.message, { cause: err });
  return new KilnError(fallback, String(err));
}

/** For exhaustive switches over unions: a new case that nobody handles fails to compile. */
export function assertNever(value: never, what = 'value'): never {
  throw new KilnError(ERROR_CODES.INTERNAL, `unexpected ${what}: ${JSON.stringify(value)}`);
}
