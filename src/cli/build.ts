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
}

/** Runs `kiln build`. Throws KilnErrors for main to render. */
export async function buildCommand(file: string, options: BuildOptions): Promise<void> {
  checkGlobalOptions(options);
  const locals = parseLocals(options.local);
  const outputs = options.output.map(parseOutput);
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
    await using result = await solve(session, definition, {
      locals,
      parallelism,
      signal: abort.signal,
      progress,
      ...(options.worker === undefined ? {} : { worker: options.worker }),
      allow: options.allow,
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
    const reason = err instanceof Error && 'code' in err && err.code === 'ENOENT' ? 'no such file' : err instanceof Error ? err.message : String(err);
    throw new KilnError(ERROR_CODES.DEFINITION_READ, `cannot read definition ${file}: ${reason}`, { cause: err });
  }
}

function parseLocals(specs: readonly string[]): Record<string, string> {
  const locals: Record<string, string> = {};
  for (const spec of specs) {
    const [name, dir] = parseBinding('--local', spec);
    locals[name] = resolve(dir);
  }
  return locals;
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
