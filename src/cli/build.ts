/** `kiln build FILE|-`: load, solve, export, with progress on stderr. */
import os from 'node:os';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { buffer } from 'node:stream/consumers';
import type { Writable } from 'node:stream';
import { checkOutputs, type Entitlement, exportResult, type ImageOutputOptions, type OutputSpec, solve } from '../client/solve.js';
import { Session, type SnapshotterChoice } from '../client/session.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import { parseNames } from '../exporter/index.js';
import { type DefinitionFormat, parseAnyDefinition } from '../llb/formats.js';
import type { SourceLocation } from '../llb/types.js';
import type { ImageConfig } from '../content/types.js';
import type { NoCache } from '../ops/graph.js';
import { createLogger, type LogLevel } from '../log.js';
import { parseSshFlag, resolveSshSources } from '../ops/exec/ssh.js';
// Not the folder's index: it loads the tty view (log-update, string-width), which only tty progress needs.
import { createRerunCollector } from '../progress/rerun-report.js';
import { openRenderer, type ProgressMode } from '../progress/select.js';
import { teeProgress } from '../progress/tee.js';
import { newBuildId } from '../history/record.js';
import { checkGlobalOptions, type GlobalOptions, sessionOptions } from './global-options.js';
import { parseCacheExport, parseCacheImport, writeMetadataFile } from './cache-options.js';
import { logsCommandLine, RecordedFailure } from './history.js';
import { type InteractiveFlags, interactiveShell, shellOnFailure } from './interactive.js';
import { parseBinding, parseCsvAttrs, parseDuration, parsePositiveInt } from './options.js';
import { formatSourceLocation } from './source-location.js';
import { beginLocalListings } from '../source/local/checksum.js';

interface BuildOptions extends GlobalOptions, InteractiveFlags {
  readonly local: string[];
  readonly output: string[];
  readonly progress: ProgressMode;
  readonly parallelism?: string;
  readonly snapshotter: SnapshotterChoice;
  readonly worker?: string;
  readonly allow: Entitlement[];
  readonly secret: string[];
  readonly ssh: string[];
  readonly ociLayout: string[];
  readonly insecureRegistry: string[];
  /** false with --no-cache (commander's negated flag). */
  readonly cache: boolean;
  /** `--no-cache-filter` values: commander names a `--no-` flag for what follows `no-`. */
  readonly cacheFilter: string[];
  /** `--format`: read the definition as this form instead of telling it from the content. */
  readonly format?: DefinitionFormat;
  /** `--image-config FILE`: an OCI image config for image outputs. */
  readonly imageConfig?: string;
  /** `--explain`: print why each step reran at the end. */
  readonly explain?: boolean;
  readonly historyKeepDuration?: string;
  readonly historyKeepBuilds?: string;
  readonly exportCache: string[];
  readonly importCache: string[];
  readonly metadataFile?: string;
}

/** Runs `kiln build`. Throws KilnErrors for main to render. */
export async function buildCommand(file: string, options: BuildOptions): Promise<void> {
  checkGlobalOptions(options);
  // First: with -i off a terminal, nothing else is read or run.
  const shell = interactiveShell(options, file);
  const locals = parseBindings('--local', options.local);
  const sourceDateEpoch = parseSourceDateEpoch(process.env['SOURCE_DATE_EPOCH']);
  const outputs = options.output.map((spec) => parseOutput(spec, sourceDateEpoch));
  const ociLayouts = parseBindings('--oci-layout', options.ociLayout);
  const cacheExports = options.exportCache.map(parseCacheExport);
  const cacheImports = options.importCache.map(parseCacheImport);
  // registry.insecure=true on an image output allows plain HTTP for that registry, for pulls in the same build too.
  const insecureRegistries = [...options.insecureRegistry, ...outputs.flatMap((o) => (o.type === 'image' && o.insecure === true ? parseNames(o.name).map((ref) => ref.domain) : []))];
  // Read once, up front: a file that changes during the build changes nothing.
  const secrets = await readSecrets(options.secret);
  const sshSources = options.ssh.map((spec) => parseSshFlag(spec));
  const parallelism = options.parallelism === undefined ? undefined : parsePositiveInt('--parallelism', options.parallelism);
  const definition = parseAnyDefinition(await readDefinition(file), { file, ...(options.format === undefined ? {} : { format: options.format }) });
  // The stamp of each whole local directory is taken by a find child while this process starts:
  // an unchanged context is then known as such without waiting for it.
  beginLocalListings(definition, locals);
  const imageConfig = options.imageConfig === undefined ? undefined : await readImageConfig(options.imageConfig);
  const noCache = parseNoCache(options);
  const logLines = parseLogLines(process.env['KILN_TTY_LOG_LINES']);
  const history = {
    ...(options.historyKeepDuration === undefined ? {} : { keepDurationMs: parseDuration('--history-keep-duration', options.historyKeepDuration) }),
    ...(options.historyKeepBuilds === undefined ? {} : { keepBuilds: parseWholeNumber('--history-keep-builds', options.historyKeepBuilds) }),
  };
  // Chosen here so that a failure can name the record it left.
  const historyId = newBuildId();

  const logger = createLogger({
    ...(options.logLevel === undefined ? {} : { level: options.logLevel as LogLevel }),
    ...(options.logFile === undefined ? {} : { file: options.logFile }),
  });
  const abort = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    const code = 128 + (os.constants.signals[signal] ?? 15);
    if (abort.signal.aborted) process.exit(code); // second signal: stop now
    process.exitCode = code;
    // A hangup is the terminal gone: writing progress to it would fail the cleanup with EIO.
    if (signal === 'SIGHUP') process.stderr.on('error', () => undefined);
    abort.abort(new KilnError(ERROR_CODES.CANCELLED, `build cancelled by ${signal}`));
  };
  // SIGHUP as well: a build whose terminal or ssh session closes is cancelled and cleans up, not killed where it stands.
  process.on('SIGINT', onSignal).on('SIGTERM', onSignal).on('SIGHUP', onSignal);

  let failedAt: SourceLocation | undefined;
  const renderer = await openRenderer(options.progress, process.stderr, logLines === undefined ? {} : { logLines });
  const reruns = options.explain === true ? createRerunCollector() : undefined;
  const progress =
    reruns === undefined
      ? renderer
      : { emit: teeProgress(renderer, reruns).emit, close: () => renderer.close(), pause: () => renderer.pause(), resume: () => renderer.resume() };
  const session = await Session.open({ ...sessionOptions(options), snapshotter: options.snapshotter, logger, history });
  try {
    await checkOutputs(outputs, { root: session.root, locals: new Map(Object.entries(locals)) });
    // Key files get a kiln-run agent for the length of the build.
    await using agents = await resolveSshSources(sshSources);
    await using result = await solve(session, definition, {
      locals,
      ...(parallelism === undefined ? {} : { parallelism }),
      signal: abort.signal,
      progress,
      ...(options.worker === undefined ? {} : { worker: options.worker }),
      allow: options.allow,
      secrets,
      ssh: Object.fromEntries(agents.sockets),
      ociLayouts,
      insecureRegistries,
      ...(noCache === undefined ? {} : { noCache }),
      ...(imageConfig === undefined ? {} : { imageConfig }),
      history: { id: historyId, definition: file },
      ...(shell === undefined ? {} : { onExecError: shellOnFailure(shell, progress, abort.signal) }),
      cacheImports,
      cacheExports,
    });
    const report = await exportResult(result, outputs, { signal: abort.signal });
    if (options.metadataFile !== undefined) await writeMetadataFile(options.metadataFile, report);
  } catch (err) {
    const failure: unknown = abort.signal.aborted ? abort.signal.reason : err;
    // A failed op that came from a frontend's source (a Dockerfile line) is shown there, as BuildKit does.
    const op = failure instanceof KilnError ? failure.op : undefined;
    failedAt = op === undefined ? undefined : definition.sourceLocations?.get(op);
    // A build that got as far as running has a record: its last line says how to read the whole log.
    const recorded = (await session.history.reread(historyId).catch(() => undefined)) !== undefined;
    throw recorded ? new RecordedFailure(failure, logsCommandLine(historyId, options.root)) : failure;
  } finally {
    await progress.close();
    // After the progress (the report is the last thing said), on stderr with it: stdout may carry an output.
    if (reruns !== undefined) process.stderr.write(reruns.lines().map((line) => `${line}\n`).join(''));
    if (failedAt !== undefined) process.stderr.write(formatSourceLocation(failedAt));
    await session.close();
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal).off('SIGHUP', onSignal);
  }
}

async function readDefinition(file: string): Promise<Uint8Array> {
  try {
    return file === '-' ? await buffer(process.stdin) : await readFile(file);
  } catch (err) {
    throw new KilnError(ERROR_CODES.DEFINITION_READ, `cannot read definition ${file}: ${readFailure(err)}`, { cause: err });
  }
}

/**
 * `--image-config FILE`: an OCI image config, as a frontend returns it in
 * `containerimage.config`. Checked for the shape the exporter needs
 * (`rootfs.diff_ids` is optional: a config for an image from scratch may
 * leave it out); anything else in it is kept as it is.
 */
async function readImageConfig(file: string): Promise<ImageConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new KilnError(ERROR_CODES.USAGE, `--image-config ${file}: ${readFailure(err)}`, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new KilnError(ERROR_CODES.USAGE, `--image-config ${file}: not JSON (${(err as Error).message})`, { cause: err });
  }
  const problem = imageConfigProblem(json);
  if (problem !== undefined) throw new KilnError(ERROR_CODES.USAGE, `--image-config ${file}: ${problem}`);
  const config = json as ImageConfig;
  return { ...config, rootfs: { type: 'layers', diff_ids: config.rootfs?.diff_ids ?? [] } };
}

function imageConfigProblem(json: unknown): string | undefined {
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObject(json)) return 'expected an OCI image config object';
  if (json['config'] !== undefined && !isObject(json['config'])) return '"config" must be an object';
  const rootfs = json['rootfs'];
  if (rootfs !== undefined && (!isObject(rootfs) || !Array.isArray(rootfs['diff_ids']))) return '"rootfs" must be { "type": "layers", "diff_ids": [...] }';
  if (json['history'] !== undefined && !Array.isArray(json['history'])) return '"history" must be a list';
  return undefined;
}

function readFailure(err: unknown): string {
  const code = err instanceof Error && 'code' in err ? err.code : undefined;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EISDIR') return 'it is a directory, not a file';
  return err instanceof Error ? err.message : String(err);
}

/** `NAME=DIR` flags → NAME → absolute DIR. A Map first: a NAME such as `__proto__` is just a name. */
function parseBindings(flag: string, specs: readonly string[]): Record<string, string> {
  const bound = new Map<string, string>();
  for (const spec of specs) {
    const [name, dir] = parseBinding(flag, spec);
    if (bound.has(name)) throw new KilnError(ERROR_CODES.USAGE, `${flag} "${spec}": ${name} is bound twice`);
    bound.set(name, resolve(dir));
  }
  return Object.fromEntries(bound);
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

/** `--no-cache` (every op) or `--no-cache-filter A,B` (those ops; the names are checked against the definition by solve). */
function parseNoCache(options: BuildOptions): NoCache | undefined {
  const names = options.cacheFilter.flatMap((spec) => spec.split(',')).map((n) => n.trim());
  if (names.some((n) => n === '')) throw new KilnError(ERROR_CODES.USAGE, `--no-cache-filter "${options.cacheFilter.join(',')}": an op name is empty`);
  if (!options.cache) {
    if (names.length > 0) throw new KilnError(ERROR_CODES.USAGE, '--no-cache reruns every op: give it or --no-cache-filter, not both');
    return true;
  }
  return names.length === 0 ? undefined : names;
}

/** A count flag that may be 0. */
function parseWholeNumber(flag: string, text: string): number {
  if (!/^\d+$/.test(text)) throw new KilnError(ERROR_CODES.USAGE, `${flag} "${text}": expected a whole number`);
  return Number(text);
}

/** KILN_TTY_LOG_LINES: how many output lines the tty view shows under each running step (0 hides them). */
function parseLogLines(value: string | undefined): number | undefined {
  if (value === undefined || value === '') return undefined;
  if (!/^\d+$/.test(value)) throw new KilnError(ERROR_CODES.USAGE, `KILN_TTY_LOG_LINES "${value}": expected a whole number of lines (default 6)`);
  return Number(value);
}

/** SOURCE_DATE_EPOCH, as reproducible-builds.org defines it: whole seconds since the epoch. */
function parseSourceDateEpoch(value: string | undefined): number | undefined {
  if (value === undefined || value === '') return undefined;
  if (!/^\d+$/.test(value)) throw new KilnError(ERROR_CODES.USAGE, `SOURCE_DATE_EPOCH "${value}": expected whole seconds since 1970-01-01`);
  return Number(value);
}

/** Each output type as messages name it, with its article: `an OCI output`. */
const OUTPUT_NAMES: Readonly<Record<OutputSpec['type'], string>> = {
  local: 'a local output',
  tar: 'a tar output',
  oci: 'an OCI output',
  docker: 'a docker output',
  image: 'an image output',
};

/** The keys each output type takes. */
const OUTPUT_KEYS: Readonly<Record<OutputSpec['type'], readonly string[]>> = {
  local: ['type', 'dest'],
  tar: ['type', 'dest'],
  oci: ['type', 'dest', 'name', 'compression', 'compression-level', 'oci-mediatypes', 'rewrite-timestamp'],
  docker: ['type', 'dest', 'name', 'compression', 'compression-level', 'oci-mediatypes', 'rewrite-timestamp'],
  image: ['type', 'name', 'push', 'registry.insecure', 'compression', 'compression-level', 'oci-mediatypes', 'rewrite-timestamp'],
};

function parseOutput(spec: string, sourceDateEpoch: number | undefined): OutputSpec {
  const attrs = parseCsvAttrs('--output', spec);
  const { type, dest, name } = attrs;
  const usage = (message: string): KilnError => new KilnError(ERROR_CODES.USAGE, `--output "${spec}": ${message}`);
  if (type === undefined || !Object.hasOwn(OUTPUT_KEYS, type)) throw usage('type must be local, tar, oci, docker or image');
  const kind = type as OutputSpec['type'];
  const known = OUTPUT_KEYS[kind];
  const unknown = Object.keys(attrs).filter((k) => !known.includes(k));
  if (unknown.length > 0) throw usage(`unknown key ${unknown.map((k) => `"${k}"`).join(', ')} (${OUTPUT_NAMES[kind]} takes ${known.join(', ')})`);
  const needDest = (): string | NodeJS.WritableStream => {
    if (dest === undefined || dest === '') throw usage('dest is required');
    return dest === '-' ? process.stdout : resolve(dest);
  };
  /** `name`, each of its comma-separated references checked before anything runs. */
  const checkedName = (given: string): string => {
    try {
      parseNames(given);
    } catch (err) {
      throw usage(err instanceof Error ? err.message : String(err));
    }
    return given;
  };
  const needName = (): string => {
    if (name === undefined || name === '') throw usage(`name is required for ${OUTPUT_NAMES[kind]}`);
    return checkedName(name);
  };
  const flag = (key: string): boolean | undefined => {
    const v = attrs[key];
    if (v === undefined) return undefined;
    if (v !== 'true' && v !== 'false') throw usage(`${key} must be true or false`);
    return v === 'true';
  };
  const image = (): ImageOutputOptions => {
    const compression = attrs['compression'];
    if (compression !== undefined && compression !== 'gzip' && compression !== 'uncompressed') throw usage('compression must be gzip or uncompressed');
    const levelText = attrs['compression-level'];
    const level = levelText === undefined ? undefined : Number(levelText);
    if (level !== undefined && (!Number.isInteger(level) || level < 0 || level > 9)) throw usage('compression-level must be 0 to 9');
    const oci = flag('oci-mediatypes');
    const rewrite = flag('rewrite-timestamp');
    if (rewrite === true && sourceDateEpoch === undefined) throw usage('rewrite-timestamp=true needs SOURCE_DATE_EPOCH in the environment');
    return {
      ...(compression === undefined ? {} : { compression }),
      ...(level === undefined ? {} : { compressionLevel: level }),
      ...(oci === undefined ? {} : { ociMediaTypes: oci }),
      ...(sourceDateEpoch === undefined ? {} : { sourceDateEpoch }),
      ...(rewrite === undefined ? {} : { rewriteTimestamp: rewrite }),
    };
  };
  switch (kind) {
    case 'local':
      if (dest === '-') throw usage('a local output needs a directory, not -');
      return { type: 'local', dest: needDest() as string };
    case 'tar':
      return { type: 'tar', dest: needDest() as string | Writable };
    case 'oci':
      return { type: 'oci', dest: needDest() as string | Writable, ...(name === undefined ? {} : { name: checkedName(name) }), ...image() };
    case 'docker':
      return { type: 'docker', dest: needDest() as string | Writable, name: needName(), ...image() };
    case 'image': {
      const push = flag('push');
      const insecure = flag('registry.insecure');
      return { type: 'image', name: needName(), ...(push === undefined ? {} : { push }), ...(insecure === undefined ? {} : { insecure }), ...image() };
    }
  }
}
