/** `kiln build FILE|-`: load, solve, export, with progress on stderr. */
import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { text } from 'node:stream/consumers';
import { type Entitlement, exportResult, type OutputSpec, solve } from '../client/solve.js';
import { Session, type SnapshotterChoice } from '../client/session.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import { parseDefinition } from '../llb/load.js';
import { createLogger, type LogLevel } from '../log.js';
import { parseSshFlag, resolveSshSources } from '../ops/exec/ssh.js';
import { createRenderer } from '../progress/index.js';
import { checkGlobalOptions, type GlobalOptions, sessionOptions } from './main.js';
import { parseBinding, parseCsvAttrs, parsePositiveInt } from './options.js';

interface BuildOptions extends GlobalOptions {
  readonly local: string[];
  readonly output: string[];
  readonly progress: 'auto' | 'plain' | 'rawjson';
  readonly parallelism?: string;
  readonly snapshotter: SnapshotterChoice;
  readonly worker?: string;
  readonly allow: Entitlement[];
  readonly secret: string[];
  readonly ssh: string[];
}

/** Runs `kiln build`. Throws KilnErrors for main to render. */
export async function buildCommand(file: string, options: BuildOptions): Promise<void> {
  checkGlobalOptions(options);
  const locals = parseLocals(options.local);
  const outputs = options.output.map(parseOutput);
  // Read once, up front: a file that changes during the build changes nothing.
  const secrets = await readSecrets(options.secret);
  const sshSources = options.ssh.map((spec) => parseSshFlag(spec));
  const parallelism = options.parallelism === undefined ? availableParallelism() : parsePositiveInt('--parallelism', options.parallelism);
  const definition = parseDefinition(await readDefinition(file), { file });

  const logger = createLogger({
    ...(options.logLevel === undefined ? {} : { level: options.logLevel as LogLevel }),
    ...(options.logFile === undefined ? {} : { file: options.logFile }),
  });
  const abort = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    if (abort.signal.aborted) process.exit(signal === 'SIGINT' ? 130 : 143); // second signal: stop now
    process.exitCode = signal === 'SIGINT' ? 130 : 143;
    abort.abort(new KilnError(ERROR_CODES.CANCELLED, `build cancelled by ${signal}`));
  };
  process.on('SIGINT', onSignal).on('SIGTERM', onSignal);

  const progress = createRenderer(options.progress, process.stderr);
  const session = await Session.open({ ...sessionOptions(options), snapshotter: options.snapshotter, logger });
  try {
    // Key files get a kiln-run agent for the length of the build.
    await using agents = await resolveSshSources(sshSources);
    await using result = await solve(session, definition, {
      locals,
      parallelism,
      signal: abort.signal,
      progress,
      ...(options.worker === undefined ? {} : { worker: options.worker }),
      allow: options.allow,
      secrets,
      ssh: Object.fromEntries(agents.sockets),
    });
    await exportResult(result, outputs, abort.signal);
  } catch (err) {
    if (abort.signal.aborted) throw abort.signal.reason;
    throw err;
  } finally {
    await progress.close();
    await session.close();
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
  }
}

async function readDefinition(file: string): Promise<string> {
  try {
    return file === '-' ? await text(process.stdin) : await readFile(file, 'utf8');
  } catch (err) {
    throw new KilnError(ERROR_CODES.DEFINITION_READ, `cannot read definition ${file}: ${readFailure(err)}`, { cause: err });
  }
}

function readFailure(err: unknown): string {
  return err instanceof Error && 'code' in err && err.code === 'ENOENT' ? 'no such file' : err instanceof Error ? err.message : String(err);
}

function parseLocals(specs: readonly string[]): Record<string, string> {
  const locals: Record<string, string> = {};
  for (const spec of specs) {
    const [name, dir] = parseBinding('--local', spec);
    locals[name] = resolve(dir);
  }
  return locals;
}

/**
 * `--secret id=ID,src=FILE` and `--secret id=ID,env=VAR` (buildctl's syntax;
 * `source` for `src`, and `type=file|env` may be given). A variable that is
 * not set leaves the secret out, so that an optional use of it is skipped
 * and a required one is refused by name; a file that cannot be read fails
 * at once, as buildctl does.
 */
async function readSecrets(specs: readonly string[]): Promise<Record<string, Uint8Array>> {
  // A Map, not an object: an id such as __proto__ or constructor is just an id.
  const secrets = new Map<string, Uint8Array>();
  for (const spec of specs) {
    const attrs = parseCsvAttrs('--secret', spec);
    const { id, type, env } = attrs;
    const src = attrs['src'] ?? attrs['source'];
    const known = new Set(['id', 'type', 'src', 'source', 'env']);
    const unknown = Object.keys(attrs).filter((k) => !known.has(k));
    if (unknown.length > 0) throw new KilnError(ERROR_CODES.USAGE, `--secret "${spec}": unknown key ${unknown.map((k) => `"${k}"`).join(', ')} (a secret takes id, and src or env)`);
    if (id === undefined || id === '') throw new KilnError(ERROR_CODES.USAGE, `--secret "${spec}": id is required`);
    if ((src === undefined) === (env === undefined)) throw new KilnError(ERROR_CODES.USAGE, `--secret "${spec}": give exactly one of src=FILE or env=VAR`);
    if (type !== undefined && type !== (src === undefined ? 'env' : 'file')) {
      throw new KilnError(ERROR_CODES.USAGE, `--secret "${spec}": type=${type} does not match ${src === undefined ? 'env=' : 'src='} (type is file with src, env with env)`);
    }
    if (secrets.has(id)) throw new KilnError(ERROR_CODES.USAGE, `--secret "${spec}": secret "${id}" is given twice`);
    if (src !== undefined) {
      try {
        secrets.set(id, await readFile(src));
      } catch (err) {
        throw new KilnError(ERROR_CODES.SECRET, `--secret id=${id}: cannot read ${src}: ${readFailure(err)}`, { cause: err });
      }
    } else {
      const value = env === undefined ? undefined : process.env[env];
      if (value !== undefined) secrets.set(id, Buffer.from(value, 'utf8'));
    }
  }
  return Object.fromEntries(secrets);
}

function parseOutput(spec: string): OutputSpec {
  const attrs = parseCsvAttrs('--output', spec);
  const { type, dest } = attrs;
  const known = new Set(['type', 'dest']);
  const unknown = Object.keys(attrs).filter((k) => !known.has(k));
  if (unknown.length > 0) throw new KilnError(ERROR_CODES.USAGE, `--output "${spec}": unknown key ${unknown.map((k) => `"${k}"`).join(', ')} (this output takes type and dest)`);
  if (dest === undefined || dest === '') throw new KilnError(ERROR_CODES.USAGE, `--output "${spec}": dest is required`);
  switch (type) {
    case 'local':
      if (dest === '-') throw new KilnError(ERROR_CODES.USAGE, `--output "${spec}": a local output needs a directory, not -`);
      return { type: 'local', dest: resolve(dest) };
    case 'tar':
      return { type: 'tar', dest: dest === '-' ? process.stdout : resolve(dest) };
    default:
      throw new KilnError(ERROR_CODES.USAGE, `--output "${spec}": type must be local or tar`);
  }
}
