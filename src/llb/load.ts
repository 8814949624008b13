/**
 * The JSON LLB v1 loader. It checks a whole definition against the spec and
 * reports every problem at once (each with its JSON path) as one
 * ValidationError; only a definition with no problem at all comes back, as
 * the normalized types of ./types.ts with every default filled in.
 *
 * It works in three passes: each op on its own (fields, body, output count),
 * then the references between ops (inputs, result, image.base) and cycles,
 * and finally, for a valid file only, the ops the result needs, in
 * dependency order, each with its digest.
 */
import { isUtf8 } from 'node:buffer';
import { type Digest, digestOf } from '../digest.js';
import { assertNever, ERROR_CODES, KilnError, ValidationError } from '../errors.js';
import { canonicalOp } from './canonical.js';
import { capProblem } from './caps.js';
import { Checker, describe, didYouMean, type Fields, fieldPath, fieldsOf, indexPath, inputRangeHint, joinOr, ROOT_PATH } from './check.js';
import type {
  RawDefinition,
  RawDiff,
  RawImageConfig,
  RawImageSpec,
  RawInput,
  RawMerge,
  RawMetadata,
  RawOpBodies,
  RawOpCommon,
  RawPlatform,
} from './json-types.js';
import { countKeyTokens, parsedFacts, scanJson } from './json-syntax.js';
import { loadExec } from './load-exec.js';
import { loadFile } from './load-file.js';
import { loadSource } from './load-source.js';
import { cycleThrough, dependencyOrder, findCycles } from './op-graph.js';
import { firstInvalidUtf8 } from './utf8.js';
import type { Definition, DiffOp, ImageConfig, ImageSpec, MergeOp, Op, OpBody, OpMetadata, OutputRef, Platform } from './types.js';

/** Options of parseDefinition and loadDefinition. */
export interface LoadOptions {
  /** Where the definition came from, for messages ("-" for stdin). */
  readonly file?: string;
  /** The platform of ops that name none; defaults to hostPlatform(). */
  readonly hostPlatform?: Platform;
  /**
   * Digests the ops already have, by name: a definition read from BuildKit's
   * protobuf keeps each op's digest (sha256 of its bytes) rather than the
   * digest of kiln's canonical form, so progress shows what buildkitd shows.
   */
  readonly opDigests?: ReadonlyMap<string, Digest>;
}

const TOP_FIELDS = fieldsOf<RawDefinition>({ version: true, ops: true, result: true, image: true });
const OP_KINDS = fieldsOf<RawOpBodies>({ source: true, exec: true, file: true, merge: true, diff: true });
const OP_FIELDS = [...fieldsOf<RawOpCommon>({ inputs: true, platform: true, constraints: true, metadata: true }), ...OP_KINDS];
const REF_FIELDS = fieldsOf<Exclude<RawInput, string>>({ op: true, output: true });
const PLATFORM_FIELDS = fieldsOf<RawPlatform>({ os: true, architecture: true, variant: true });
const METADATA_FIELDS = fieldsOf<RawMetadata>({ description: true, ignoreCache: true, progressGroup: true, exportCache: true, caps: true });
const PROGRESS_GROUP_FIELDS = fieldsOf<NonNullable<RawMetadata['progressGroup']>>({ id: true, name: true, weak: true });
const MERGE_FIELDS = fieldsOf<RawMerge>({ inputs: true });
const DIFF_FIELDS = fieldsOf<RawDiff>({ lower: true, upper: true });
const IMAGE_FIELDS = fieldsOf<RawImageSpec>({ base: true, config: true });
const IMAGE_CONFIG_FIELDS = fieldsOf<RawImageConfig>({
  env: true,
  entrypoint: true,
  cmd: true,
  workingDir: true,
  user: true,
  labels: true,
  exposedPorts: true,
});

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const CONSTRAINT_RE = /^(?:id|executor|snapshotter|platform|labels\.[^=!]+)(?:==|!=)/;
const PORT_RE = /^(\d{1,5})(?:\/(?:tcp|udp|sctp))?$/;
const ARCHITECTURES: Readonly<Record<string, string>> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386' };

/** The platform kiln runs on, with OCI's architecture names (x64 → amd64). */
export function hostPlatform(): Platform {
  return { os: 'linux', architecture: ARCHITECTURES[process.arch] ?? process.arch, variant: '' };
}

/**
 * The largest definition kiln reads, in bytes (characters for text). Every
 * pass over a definition is linear, so this bounds the time and memory a
 * load takes; larger content belongs in a local or http source.
 */
export const MAX_DEFINITION_BYTES = 128 * 1024 * 1024;

/**
 * Parses JSON LLB text. A syntax error is reported with its line, column and
 * JSON path; a key an object repeats is reported like any other problem.
 */
export function parseDefinition(text: string, options: LoadOptions = {}): Definition {
  const fail = (path: string, message: string): never => {
    throw new ValidationError([{ path: path === '' ? ROOT_PATH : path, message }], options.file);
  };
  if (text.length > MAX_DEFINITION_BYTES) fail('', `the definition is ${text.length} characters long; kiln reads at most ${MAX_DEFINITION_BYTES}`);
  // Editors on some systems save a byte-order mark, which JSON.parse rejects.
  const body = text.startsWith('\uFEFF') ? text.slice(1) : text;
  // The native parser first: the scan in JS, which finds where a syntax
  // error is and which keys repeat, is many times slower, so it runs only
  // when the text is not JSON or has more keys than the parsed objects hold.
  let json: unknown;
  let parsed = true;
  try {
    json = JSON.parse(body);
  } catch {
    parsed = false;
  }
  const facts = parsed ? parsedFacts(json) : undefined;
  if (facts !== undefined && !facts.largeNumbers && countKeyTokens(body) === facts.keys) return loadChecked(new Checker(), json, options);
  const scan = scanJson(body);
  const { problem } = scan;
  if (problem !== undefined) fail(problem.path, `invalid JSON at line ${problem.line}, column ${problem.column}: ${problem.message}`);
  // The scan accepts exactly JSON's grammar, so this is not expected; still a user error, not a crash.
  if (!parsed) fail('', 'invalid JSON');
  const c = new Checker({ numberTexts: scan.largeNumbers });
  for (const { path, key } of scan.duplicates) {
    c.report(path, `duplicate key ${JSON.stringify(key)}: JSON keeps only the last one, so an earlier value would be silently ignored`);
  }
  return loadChecked(c, json, options);
}

/**
 * Parses a JSON LLB file's bytes, which must be UTF-8: an invalid byte is
 * reported with its line, column and the JSON path of the string it is in,
 * rather than silently becoming U+FFFD in a path or file.
 */
export function parseDefinitionBytes(bytes: Uint8Array, options: LoadOptions = {}): Definition {
  if (bytes.length > MAX_DEFINITION_BYTES) {
    throw new ValidationError([{ path: ROOT_PATH, message: `the definition is ${bytes.length} bytes; kiln reads at most ${MAX_DEFINITION_BYTES}` }], options.file);
  }
  // isUtf8 is native; the JS search for the bad byte runs only when there is one.
  const bad = isUtf8(bytes) ? -1 : firstInvalidUtf8(bytes);
  if (bad === -1) return parseDefinition(new TextDecoder('utf-8', { ignoreBOM: true }).decode(bytes), options);
  // The text before the bad byte is valid, so its length is the bad byte's offset in the decoded text.
  const offset = new TextDecoder().decode(bytes.subarray(0, bad)).length;
  const message = `invalid UTF-8: byte 0x${(bytes[bad] ?? 0).toString(16).padStart(2, '0')} at byte offset ${bad}`;
  const found = scanJson(new TextDecoder().decode(bytes), { stopAt: { offset, message } }).problem;
  const where = found === undefined ? '' : `line ${found.line}, column ${found.column}: `;
  throw new ValidationError([{ path: found?.path || ROOT_PATH, message: `${where}${message}` }], options.file);
}

/** An input reference with the JSON path it was written at. */
interface LocatedRef {
  readonly ref: OutputRef;
  readonly path: string;
}

/** An op checked on its own, before the references between ops are. */
interface Draft {
  readonly refs: readonly LocatedRef[];
  /** Undefined when the body is invalid (already reported). */
  readonly body: OpBody | undefined;
  readonly outputCount: number | undefined;
  readonly platform: Platform;
  readonly constraints: readonly string[];
  readonly metadata: OpMetadata;
}

/** Validates a parsed JSON LLB v1 definition and returns it normalized; throws ValidationError listing every problem. */
export function loadDefinition(json: unknown, options: LoadOptions = {}): Definition {
  return loadChecked(new Checker(), json, options);
}

/** loadDefinition, reporting into `c`, which may already hold problems found in the text. */
function loadChecked(c: Checker, json: unknown, options: LoadOptions): Definition {
  const top = c.object(json, '', TOP_FIELDS);
  if (top === undefined) throw new ValidationError(c.diagnostics, options.file);
  top.read('version', (v, p) => (v === 1 ? v : c.report(p, `unsupported version: expected 1, got ${describe(v)}`)), true);

  // Pass 1: each op on its own.
  const opsFields = top.object('ops', null, true);
  const names = new Set(opsFields?.keys());
  const drafts = new Map<string, Draft>();
  for (const name of names) {
    const at = fieldPath('ops', name);
    if (!NAME_RE.test(name)) {
      c.report(at, `invalid op name "${name}": use letters, digits, ".", "_" and "-", starting with a letter or digit, at most 128 characters`);
    }
    const draft = loadOp(c, opsFields?.get(name), at, options.hostPlatform ?? hostPlatform());
    if (draft !== undefined) drafts.set(name, draft);
  }

  // Pass 2: references between ops.
  const checkRef = ({ ref, path }: LocatedRef): void => {
    if (!names.has(ref.op)) {
      c.report(path, `no op named "${ref.op}"${didYouMean(ref.op, names)}`);
      return;
    }
    const count = drafts.get(ref.op)?.outputCount;
    if (count === undefined || ref.output < count) return;
    c.report(
      path,
      count === 0
        ? `op "${ref.op}" has no outputs (none of its mounts or actions has an output >= 0)`
        : `op "${ref.op}" has ${count} output${count === 1 ? '' : 's'}, so output ${ref.output} does not exist`,
    );
  };
  for (const draft of drafts.values()) draft.refs.forEach(checkRef);
  const result = top.read('result', (v, p) => (v === null ? null : readRef(c, v, p)), true);
  if (result) checkRef({ ref: result, path: 'result' });
  const image = top.read('image', (v, p) => loadImage(c, v, p));
  if (image?.base !== undefined) checkImageBase(c, image.base, names, drafts);

  // Each op's inputs, once each, in order; references to missing ops were reported above.
  const graph = new Map<string, string[]>();
  for (const [name, draft] of drafts) graph.set(name, [...new Set(draft.refs.map(({ ref }) => ref.op).filter((op) => drafts.has(op)))]);
  for (const component of findCycles(graph)) {
    const cycle = cycleThrough(graph, component);
    c.report(fieldPath(fieldPath('ops', cycle[0] ?? ''), 'inputs'), `cycle: ${[...cycle, cycle[0]].join(' -> ')}`);
  }
  if (c.diagnostics.length > 0) throw new ValidationError(c.diagnostics, options.file);

  // Pass 3: the ops the result (and the image's base) need; postorder puts every input before its users.
  const roots = [result?.op, image?.base].filter((r) => r !== undefined);
  const ops = new Map<string, Op>();
  for (const name of dependencyOrder(graph, roots)) ops.set(name, finishOp(name, drafts.get(name), ops, options.opDigests?.get(name)));
  return {
    version: 1,
    ops,
    result: result ?? null,
    ...(image === undefined ? {} : { image }),
    ...(options.file === undefined ? {} : { file: options.file }),
  };
}

function internal(message: string): never {
  throw new KilnError(ERROR_CODES.INTERNAL, `loading the definition: ${message}`);
}

/** A draft of a valid file, made an Op: its digest is taken over its inputs' digests. */
function finishOp(name: string, draft: Draft | undefined, done: ReadonlyMap<string, Op>, given: Digest | undefined): Op {
  if (draft?.body === undefined || draft.outputCount === undefined) return internal(`op "${name}" has no valid body`);
  const inputs = draft.refs.map((r) => r.ref);
  const inputDigests = inputs.map((ref) => done.get(ref.op)?.digest ?? internal(`op "${name}" was ordered before its input "${ref.op}"`));
  const { body, platform, constraints, metadata, outputCount } = draft;
  const digest = given ?? digestOf(canonicalOp({ inputs, body, platform, constraints }, inputDigests));
  return { name, inputs, body, platform, constraints, metadata, digest, outputCount };
}

/** An input or result reference: a bare name (output 0) or `{ op, output }`. */
function readRef(c: Checker, value: unknown, at: string): OutputRef | undefined {
  if (typeof value === 'string') return { op: value, output: 0 };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return c.report(at, `expected an op name or { "op": NAME, "output": N }, got ${describe(value)}`);
  }
  const f = c.object(value, at, REF_FIELDS);
  const op = f?.text('op', true);
  const output = f?.int('output', { min: 0 }, true);
  return op === undefined || output === undefined ? undefined : { op, output };
}

function loadOp(c: Checker, value: unknown, at: string, host: Platform): Draft | undefined {
  const f = c.object(value, at, OP_FIELDS);
  if (f === undefined) return undefined;
  const inputItems = f.list('inputs') ?? [];
  const refs = inputItems.flatMap((item) => {
    const ref = readRef(c, item.value, item.path);
    return ref === undefined ? [] : [{ ref, path: item.path }];
  });

  const kinds = OP_KINDS.filter((kind) => f.has(kind));
  const kind = kinds[0];
  if (kinds.length === 0) c.report(at, `an op needs one of ${joinOr(OP_KINDS)}`);
  if (kinds.length > 1) c.report(at, `has both ${kinds.join(' and ')}; an op is exactly one of ${joinOr(OP_KINDS)}`);
  if (kind === 'source' && inputItems.length > 0) c.report(f.at('inputs'), 'a source op takes no inputs');
  const loaded = kind === undefined || kinds.length > 1 ? undefined : loadBody(c, kind, f, inputItems.length);

  const constraints = f.strings('constraints') ?? [];
  constraints.forEach((constraint, i) => {
    if (!CONSTRAINT_RE.test(constraint)) {
      c.report(
        indexPath(f.at('constraints'), i),
        `must be FIELD==VALUE or FIELD!=VALUE with FIELD one of id, executor, snapshotter, platform or labels.KEY, got "${constraint}"`,
      );
    }
  });
  return {
    refs,
    body: loaded?.body,
    outputCount: loaded?.outputCount,
    platform: f.read('platform', (v, p) => loadPlatform(c, v, p)) ?? host,
    constraints,
    metadata: f.read('metadata', (v, p) => loadMetadata(c, v, p)) ?? { description: {}, ignoreCache: false },
  };
}

function loadBody(
  c: Checker,
  kind: keyof RawOpBodies,
  f: Fields,
  inputCount: number,
): { readonly body: OpBody; readonly outputCount: number } | undefined {
  const value = f.get(kind);
  const at = f.at(kind);
  switch (kind) {
    case 'source': {
      const source = loadSource(c, value, at);
      return source && { body: { kind, source }, outputCount: 1 };
    }
    case 'exec': {
      const loaded = loadExec(c, value, at, inputCount);
      return loaded && { body: { kind, exec: loaded.exec }, outputCount: loaded.outputCount };
    }
    case 'file': {
      const loaded = loadFile(c, value, at, inputCount);
      return loaded && { body: { kind, file: loaded.file }, outputCount: loaded.outputCount };
    }
    case 'merge': {
      const merge = loadMerge(c, value, at, inputCount);
      return merge && { body: { kind, merge }, outputCount: 1 };
    }
    case 'diff': {
      const diff = loadDiff(c, value, at, inputCount);
      return diff && { body: { kind, diff }, outputCount: 1 };
    }
    default:
      return assertNever(kind, 'op kind');
  }
}

function loadMerge(c: Checker, value: unknown, at: string, inputCount: number): MergeOp | undefined {
  const f = c.object(value, at, MERGE_FIELDS);
  const items = f?.list('inputs', true);
  if (items === undefined) return undefined;
  if (items.length === 0) c.report(fieldPath(at, 'inputs'), 'must not be empty: list the inputs to layer');
  const hint =
    inputCount === 0
      ? 'the op has no inputs; list the ops to merge in its "inputs"'
      : inputCount === 1
        ? 'the op has 1 input; use 0'
        : `the op has ${inputCount} inputs; use 0..${inputCount - 1}`;
  const inputs = items.map((item) => c.int(item.value, item.path, { min: 0, max: inputCount - 1, hint }));
  return inputs.every((i) => i !== undefined) ? { inputs } : undefined;
}

function loadDiff(c: Checker, value: unknown, at: string, inputCount: number): DiffOp | undefined {
  const f = c.object(value, at, DIFF_FIELDS);
  const range = { min: -1, max: inputCount - 1, hint: inputRangeHint(inputCount) };
  const lower = f?.int('lower', range, true);
  const upper = f?.int('upper', range, true);
  return lower === undefined || upper === undefined ? undefined : { lower, upper };
}

function loadPlatform(c: Checker, value: unknown, at: string): Platform | undefined {
  const f = c.object(value, at, PLATFORM_FIELDS);
  const os = f?.text('os', true);
  const architecture = f?.text('architecture', true);
  const variant = f?.string('variant') ?? '';
  return os === undefined || architecture === undefined ? undefined : { os, architecture, variant };
}

function loadMetadata(c: Checker, value: unknown, at: string): OpMetadata | undefined {
  const f = c.object(value, at, METADATA_FIELDS);
  if (f === undefined) return undefined;
  const group = f.object('progressGroup', PROGRESS_GROUP_FIELDS);
  const progressGroup = group && { id: group.text('id', true) ?? '', name: group.text('name', true) ?? '' };
  group?.bool('weak');
  f.bool('exportCache');
  const caps = f.object('caps', null);
  for (const cap of caps?.keys() ?? []) {
    // A cap listed as false is not needed.
    const problem = caps?.bool(cap) === true ? capProblem(cap) : undefined;
    if (problem !== undefined) c.report(fieldPath(fieldPath(at, 'caps'), cap), problem);
  }
  return {
    description: f.stringMap('description') ?? {},
    ignoreCache: f.bool('ignoreCache') ?? false,
    ...(progressGroup === undefined ? {} : { progressGroup }),
  };
}

function loadImage(c: Checker, value: unknown, at: string): ImageSpec | undefined {
  const f = c.object(value, at, IMAGE_FIELDS);
  const base = f?.text('base');
  const cf = f?.object('config', IMAGE_CONFIG_FIELDS, true);
  if (cf === undefined) return undefined;
  const env = cf.strings('env');
  env?.forEach((entry, i) => {
    if (!/^[^=]+=/.test(entry)) c.report(indexPath(cf.at('env'), i), `must be NAME=VALUE, got "${entry}"`);
  });
  const exposedPorts = cf.strings('exposedPorts');
  exposedPorts?.forEach((entry, i) => {
    const port = Number(PORT_RE.exec(entry)?.[1] ?? 0);
    if (port < 1 || port > 65535) c.report(indexPath(cf.at('exposedPorts'), i), `must be PORT or PORT/PROTOCOL (tcp, udp, sctp), got "${entry}"`);
  });
  const entrypoint = cf.strings('entrypoint');
  const cmd = cf.strings('cmd');
  const workingDir = cf.string('workingDir');
  const user = cf.string('user');
  const labels = cf.stringMap('labels');
  const config: ImageConfig = {
    ...(env === undefined ? {} : { env }),
    ...(entrypoint === undefined ? {} : { entrypoint }),
    ...(cmd === undefined ? {} : { cmd }),
    ...(workingDir === undefined ? {} : { workingDir }),
    ...(user === undefined ? {} : { user }),
    ...(labels === undefined ? {} : { labels }),
    ...(exposedPorts === undefined ? {} : { exposedPorts }),
  };
  return base === undefined ? { config } : { base, config };
}

/** `image.base` must name an image source, whose config the exporter starts from. */
function checkImageBase(c: Checker, base: string, names: ReadonlySet<string>, drafts: ReadonlyMap<string, Draft>): void {
  if (!names.has(base)) {
    c.report('image.base', `no op named "${base}"${didYouMean(base, names)}`);
    return;
  }
  const body = drafts.get(base)?.body;
  if (body !== undefined && !(body.kind === 'source' && /^(?:docker-image|oci-layout):\/\//.test(body.source.identifier))) {
    c.report('image.base', `op "${base}" is not a docker-image:// or oci-layout:// source, so it has no image config to start from`);
  }
}
