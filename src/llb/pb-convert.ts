/**
 * BuildKit's `pb.Definition` ↔ JSON LLB v1, at the level of the raw formats.
 *
 * The two describe the same ops field for field (the spec's "Mapping to
 * BuildKit"); where the defaults differ (a mount's `output` is -1 in JSON and
 * 0 in protobuf, an unset copy mode is absent in JSON and -1 in protobuf),
 * each value maps to exactly one value on the other side, and a protobuf
 * sub-message's presence maps to the presence of its JSON key. So an op read
 * from protobuf, written as JSON and encoded again gives the same bytes, and
 * so the same digest, as BuildKit's. What JSON cannot hold is refused here
 * with the op and field (see docs/llb-format.md, "Protobuf").
 */
import { type Digest, sha256 } from '../digest.js';
import { ValidationError } from '../errors.js';
import { fieldPath, parseOctalMode } from './check.js';
import type {
  RawChown,
  RawCopy,
  RawDefinition,
  RawExec,
  RawFileAction,
  RawInput,
  RawMetadata,
  RawMount,
  RawOp,
  RawPlatform,
  RawSource,
} from './json-types.js';
import { PB_ENUMS, type PbObject, type PbValue } from './pb-schema.js';
import { decodePb, encodePb, PbWireError } from './pb-wire.js';
import type { SourceLocation } from './types.js';

/** One entry of a Definition's `def`: the op's bytes as given, their digest, the decoded op and its metadata. */
export interface PbOpEntry {
  readonly bytes: Uint8Array;
  readonly digest: Digest;
  readonly op: PbObject;
  readonly metadata: PbObject | undefined;
}

/** A decoded pb.Definition: its ops, and its source map (`Definition.Source`) when the frontend sent one. */
export interface PbDefinition {
  readonly entries: readonly PbOpEntry[];
  readonly source?: PbObject | undefined;
}

/** A Definition converted to JSON LLB, with the digest (of the protobuf bytes) of each named op. */
export interface PbAsJson {
  readonly raw: RawDefinition;
  readonly digests: ReadonlyMap<string, Digest>;
  /** Where each op (by name) came from in the frontend's source (a Dockerfile's lines), when the Definition says. */
  readonly locations?: ReadonlyMap<string, SourceLocation>;
}

const MAX_NAME = 128;

function fail(path: string, message: string, file?: string): never {
  throw new ValidationError([{ path, message }], file);
}

/** Decodes a binary pb.Definition (what `buildctl build` reads on stdin). */
export function decodeDefinition(bytes: Uint8Array): PbDefinition {
  const def = decodePb('Definition', bytes);
  const list = (def['def'] ?? []) as readonly Uint8Array[];
  const metadata = (def['metadata'] ?? {}) as Readonly<Record<string, PbObject>>;
  const entries = list.map((opBytes, i): PbOpEntry => {
    const digest = sha256(opBytes);
    return { bytes: opBytes, digest, op: decodePb('Op', opBytes, `def[${i}] (${digest.slice(7, 19)})`), metadata: metadata[digest] };
  });
  return { entries, source: def['Source'] as PbObject | undefined };
}

/**
 * Each op's first location in the Definition's source map: the file, its
 * lines (1-based, inclusive) and the file's text when the frontend sent it.
 * A malformed map is ignored: it only decorates errors.
 */
function sourceLocations(source: PbObject | undefined, names: ReadonlyMap<Digest, string>): Map<string, SourceLocation> {
  const out = new Map<string, SourceLocation>();
  if (source === undefined) return out;
  const infos = list(source, 'infos');
  const byDigest = (source['locations'] ?? {}) as Readonly<Record<string, PbObject>>;
  for (const [digest, locations] of Object.entries(byDigest)) {
    const name = names.get(digest as Digest);
    const first = list(locations, 'locations')[0];
    // proto3 leaves a 0 out: no sourceIndex is the first info.
    const index = first?.['sourceIndex'] ?? 0;
    const info = typeof index === 'number' ? infos[index] : undefined;
    if (name === undefined || first === undefined || info === undefined) continue;
    const ranges = list(first, 'ranges').map((r) => ({
      start: Number(msg(r, 'start')?.['line'] ?? 0),
      end: Number(msg(r, 'end')?.['line'] ?? msg(r, 'start')?.['line'] ?? 0),
    }));
    const data = info['data'] as Uint8Array | undefined;
    out.set(name, {
      file: str(info, 'filename') || 'source',
      lines: ranges.filter((r) => r.start > 0),
      ...(data === undefined || data.length === 0 ? {} : { text: Buffer.from(data).toString('utf8') }),
    });
  }
  return out;
}

/** Encodes ops (in order, the terminal pointer last) and their metadata as a pb.Definition. */
export function encodeDefinition(entries: readonly Pick<PbOpEntry, 'bytes' | 'digest' | 'metadata'>[]): Uint8Array {
  const metadata: Record<string, PbObject> = Object.create(null) as Record<string, PbObject>;
  for (const e of entries) if (e.metadata !== undefined) metadata[e.digest] = e.metadata;
  return encodePb('Definition', { def: entries.map((e) => e.bytes), metadata });
}

// ---- protobuf → JSON ----

const str = (o: PbObject | undefined, k: string): string => (o?.[k] as string | undefined) ?? '';
const bool = (o: PbObject | undefined, k: string): boolean => (o?.[k] as boolean | undefined) ?? false;
const strings = (o: PbObject | undefined, k: string): string[] => [...((o?.[k] as readonly string[] | undefined) ?? [])];
const msg = (o: PbObject | undefined, k: string): PbObject | undefined => o?.[k] as PbObject | undefined;
const list = (o: PbObject | undefined, k: string): readonly PbObject[] => (o?.[k] as readonly PbObject[] | undefined) ?? [];

function int(o: PbObject | undefined, k: string, at: string): number {
  const v = o?.[k] ?? 0;
  if (typeof v === 'number') return v;
  return fail(fieldPath(at, k), `${String(v)} is out of the range kiln reads here`);
}

/** An int64 that may exceed 2^53 (timestamps): a number when exact, else a decimal string, as JSON LLB takes it. */
function bigInt(o: PbObject | undefined, k: string): number | string {
  const v = o?.[k] ?? 0;
  return typeof v === 'bigint' ? v.toString() : (v as number);
}

function octal(mode: number): string {
  return `0${mode.toString(8).padStart(3, '0')}`;
}

/** Names ops from `llb.customname` made name-safe when unique, else from their digest. */
function nameOps(entries: readonly PbOpEntry[]): Map<Digest, string> {
  const wanted = new Map<Digest, string>();
  const count = new Map<string, number>();
  for (const e of entries) {
    const custom = ((msg(e.metadata, 'description')?.['llb.customname'] as string | undefined) ?? '')
      .replace(/[^A-Za-z0-9._-]+/g, '-')
      .replace(/^[^A-Za-z0-9]+/, '')
      .slice(0, MAX_NAME)
      .replace(/-+$/, '');
    if (custom === '' || wanted.has(e.digest)) continue;
    wanted.set(e.digest, custom);
    count.set(custom, (count.get(custom) ?? 0) + 1);
  }
  const names = new Map<Digest, string>();
  const used = new Set<string>();
  for (const e of entries) {
    if (names.has(e.digest)) continue;
    const custom = wanted.get(e.digest);
    let name = custom !== undefined && count.get(custom) === 1 ? custom : '';
    for (let len = 12; name === '' || used.has(name); len += 4) name = `op-${e.digest.slice(7, 7 + len)}`;
    used.add(name);
    names.set(e.digest, name);
  }
  return names;
}

/**
 * Converts a decoded Definition to JSON LLB. The last `def` entry is the
 * result pointer (no body, one input); an empty Definition is scratch.
 */
export function definitionToJson(def: PbDefinition, file?: string): PbAsJson {
  const { entries } = def;
  const terminal = entries.at(-1);
  if (terminal === undefined) return { raw: { version: 1, ops: {}, result: null }, digests: new Map() };
  const terminalInputs = list(terminal.op, 'inputs');
  const body = Object.keys(terminal.op).filter((k) => k !== 'inputs');
  if (terminalInputs.length !== 1 || body.length > 0) {
    fail(`def[${entries.length - 1}]`, 'the last op of a Definition must be the result pointer: one input and no body', file);
  }
  const ops = entries.slice(0, -1);
  const names = nameOps(ops);
  const nameOf = (digest: string, at: string): string => names.get(digest as Digest) ?? fail(at, `input ${digest} is not an op of this Definition`, file);
  const ref = (input: PbObject, at: string): RawInput => {
    const name = nameOf(str(input, 'digest'), at);
    const output = int(input, 'index', at);
    return output === 0 ? name : { op: name, output };
  };

  const rawOps: Record<string, RawOp> = {};
  const digests = new Map<string, Digest>();
  for (const e of ops) {
    const name = names.get(e.digest) ?? '';
    if (Object.hasOwn(rawOps, name)) continue;
    const at = `ops.${name}`;
    try {
      rawOps[name] = opToJson(e, at, ref);
    } catch (err) {
      if (err instanceof PbWireError) fail(err.where, err.message, file);
      if (err instanceof ValidationError && file !== undefined) throw new ValidationError(err.diagnostics, file);
      throw err;
    }
    digests.set(name, e.digest);
  }
  const result = ref(terminalInputs[0] ?? {}, 'result');
  const locations = sourceLocations(def.source, names);
  return { raw: { version: 1, ops: rawOps, result }, digests, ...(locations.size === 0 ? {} : { locations }) };
}

function opToJson(e: PbOpEntry, at: string, ref: (input: PbObject, at: string) => RawInput): RawOp {
  const { op } = e;
  const inputs = list(op, 'inputs').map((input, i) => ref(input, `${at}.inputs[${i}]`));
  const common: Record<string, unknown> = {};
  if (inputs.length > 0) common['inputs'] = inputs;
  const platform = msg(op, 'platform');
  if (platform !== undefined) common['platform'] = platformToJson(platform, `${at}.platform`);
  const constraints = msg(op, 'constraints');
  if (constraints !== undefined) common['constraints'] = strings(constraints, 'filter');
  if (e.metadata !== undefined) common['metadata'] = metadataToJson(e.metadata, `${at}.metadata`);
  const inputCount = inputs.length;
  if (op['exec'] !== undefined) return { ...common, exec: execToJson(msg(op, 'exec'), `${at}.exec`) };
  if (op['source'] !== undefined) return { ...common, source: sourceToJson(msg(op, 'source')) };
  if (op['file'] !== undefined) return { ...common, file: { actions: list(msg(op, 'file'), 'actions').map((a, i) => actionToJson(a, `${at}.file.actions[${i}]`, inputCount, list(msg(op, 'file'), 'actions'))) } };
  if (op['merge'] !== undefined) return { ...common, merge: { inputs: list(msg(op, 'merge'), 'inputs').map((m, i) => int(m, 'input', `${at}.merge.inputs[${i}]`)) } };
  if (op['diff'] !== undefined) {
    const diff = msg(op, 'diff');
    const lower = msg(diff, 'lower');
    const upper = msg(diff, 'upper');
    if (lower === undefined || upper === undefined) fail(`${at}.diff`, 'a diff op needs both lower and upper');
    return { ...common, diff: { lower: int(lower, 'input', `${at}.diff.lower`), upper: int(upper, 'input', `${at}.diff.upper`) } };
  }
  if (op['build'] !== undefined) fail(`${at}.build`, 'BuildOp (a nested build of another Definition) is not supported: kiln builds one Definition; inline the nested one');
  if (op['passthrough'] !== undefined) fail(`${at}.passthrough`, 'PassthroughOp is not supported by kiln');
  return fail(at, 'the op has no body (exec, source, file, merge or diff); only the last op may be a result pointer');
}

function platformToJson(p: PbObject, at: string): RawPlatform {
  if (str(p, 'OSVersion') !== '' || strings(p, 'OSFeatures').length > 0) {
    fail(at, `OSVersion/OSFeatures (${str(p, 'OSVersion')}) are Windows platform fields; kiln builds Linux only`);
  }
  const variant = str(p, 'Variant');
  return { os: str(p, 'OS'), architecture: str(p, 'Architecture'), ...(variant === '' ? {} : { variant }) };
}

function metadataToJson(md: PbObject, at: string): RawMetadata {
  if (md['linux_resources'] !== undefined) fail(`${at}.linux_resources`, 'per-step cgroup resource limits are not supported by kiln');
  const description = (md['description'] ?? {}) as Record<string, string>;
  const caps = (md['caps'] ?? {}) as Record<string, boolean>;
  const group = msg(md, 'progress_group');
  const exportCache = msg(md, 'export_cache');
  return {
    ...(Object.keys(description).length === 0 ? {} : { description: { ...description } }),
    ...(bool(md, 'ignore_cache') ? { ignoreCache: true } : {}),
    ...(group === undefined ? {} : { progressGroup: { id: str(group, 'id'), name: str(group, 'name'), ...(bool(group, 'weak') ? { weak: true } : {}) } }),
    ...(exportCache === undefined ? {} : { exportCache: bool(exportCache, 'Value') }),
    ...(Object.keys(caps).length === 0 ? {} : { caps: { ...caps } }),
  };
}

function sourceToJson(s: PbObject | undefined): RawSource {
  const attrs = (s?.['attrs'] ?? {}) as Record<string, string>;
  return { identifier: str(s, 'identifier'), ...(Object.keys(attrs).length === 0 ? {} : { attrs: { ...attrs } }) };
}

const PROXY_KEYS = [
  ['http_proxy', 'httpProxy'],
  ['https_proxy', 'httpsProxy'],
  ['ftp_proxy', 'ftpProxy'],
  ['no_proxy', 'noProxy'],
  ['all_proxy', 'allProxy'],
] as const;

function enumWord<K extends keyof typeof PB_ENUMS>(kind: K, o: PbObject | undefined, k: string, at: string): (typeof PB_ENUMS)[K][number] {
  const n = int(o, k, at);
  const word = PB_ENUMS[kind][n];
  return word ?? fail(fieldPath(at, k), `${n} is not a ${kind} kiln knows (${PB_ENUMS[kind].map((w, i) => `${i} ${w}`).join(', ')})`);
}

function execToJson(e: PbObject | undefined, at: string): RawExec {
  const meta = msg(e, 'meta');
  const m = `${at}.meta`;
  if (list(e, 'cdiDevices').length > 0) fail(`${at}.cdiDevices`, 'CDI devices (RUN --device) are not supported by kiln');
  const proxy = msg(meta, 'proxy_env');
  const proxyEnv: Record<string, string> = {};
  for (const [pbKey, jsonKey] of PROXY_KEYS) if (str(proxy, pbKey) !== '') proxyEnv[jsonKey] = str(proxy, pbKey);
  const env = strings(meta, 'env');
  const exitCodes = (meta?.['validExitCodes'] ?? []) as readonly number[];
  const cwd = str(meta, 'cwd');
  const secretEnv = list(e, 'secretenv').map((s) => ({ id: str(s, 'ID'), name: str(s, 'name'), ...(bool(s, 'optional') ? { optional: true } : {}) }));
  const network = enumWord('network', e, 'network', at);
  const security = enumWord('security', e, 'security', at);
  return {
    meta: {
      args: strings(meta, 'args'),
      ...(env.length === 0 ? {} : { env }),
      ...(cwd === '/' ? {} : { cwd }),
      ...(str(meta, 'user') === '' ? {} : { user: str(meta, 'user') }),
      ...(proxy === undefined ? {} : { proxyEnv: proxyEnv }),
      ...(list(meta, 'extraHosts').length === 0 ? {} : { extraHosts: list(meta, 'extraHosts').map((h) => ({ host: str(h, 'Host'), ip: str(h, 'IP') })) }),
      ...(str(meta, 'hostname') === '' ? {} : { hostname: str(meta, 'hostname') }),
      ...(list(meta, 'ulimit').length === 0
        ? {}
        : { ulimit: list(meta, 'ulimit').map((u, i) => ({ name: str(u, 'Name'), soft: int(u, 'Soft', `${m}.ulimit[${i}]`), hard: int(u, 'Hard', `${m}.ulimit[${i}]`) })) }),
      ...(str(meta, 'cgroupParent') === '' ? {} : { cgroupParent: str(meta, 'cgroupParent') }),
      ...(bool(meta, 'removeMountStubsRecursive') ? { removeMountStubsRecursive: true } : {}),
      ...(exitCodes.length === 0 ? {} : { validExitCodes: [...exitCodes] }),
    },
    mounts: list(e, 'mounts').map((mount, i) => mountToJson(mount, `${at}.mounts[${i}]`)),
    ...(network === 'sandbox' ? {} : { network }),
    ...(security === 'sandbox' ? {} : { security }),
    ...(secretEnv.length === 0 ? {} : { secretEnv }),
  };
}

function mountToJson(mount: PbObject, at: string): RawMount {
  if (str(mount, 'resultID') !== '') fail(`${at}.resultID`, 'mounts of a gateway result (resultID) exist only inside buildkitd; kiln cannot mount them');
  const type = enumWord('mountType', mount, 'mountType', at);
  const dest = str(mount, 'dest');
  const input = int(mount, 'input', at);
  const output = int(mount, 'output', at);
  const contentCache = enumWord('contentCache', mount, 'contentCache', at);
  const out: Record<string, unknown> = {
    ...(type === 'bind' ? {} : { type }),
    dest,
    ...(input === -1 ? {} : { input }),
    ...(str(mount, 'selector') === '' ? {} : { selector: str(mount, 'selector') }),
    ...(output === -1 ? {} : { output }),
    ...(bool(mount, 'readonly') ? { readonly: true } : {}),
    ...(contentCache === 'default' ? {} : { contentCache }),
  };
  const cache = msg(mount, 'cacheOpt');
  if (cache !== undefined) {
    const sharing = enumWord('sharing', cache, 'sharing', `${at}.cacheOpt`);
    out['cache'] = { ...(str(cache, 'ID') === dest ? {} : { id: str(cache, 'ID') }), ...(sharing === 'shared' ? {} : { sharing }) };
  }
  const tmpfs = msg(mount, 'TmpfsOpt');
  if (tmpfs !== undefined) out['tmpfs'] = int(tmpfs, 'size', `${at}.TmpfsOpt`) === 0 ? {} : { size: int(tmpfs, 'size', `${at}.TmpfsOpt`) };
  const secret = msg(mount, 'secretOpt');
  if (secret !== undefined) out['secret'] = { id: str(secret, 'ID'), ...ownershipToJson(secret, 0o400, at) };
  const ssh = msg(mount, 'SSHOpt');
  if (ssh !== undefined) out['ssh'] = { ...(str(ssh, 'ID') === 'default' ? {} : { id: str(ssh, 'ID') }), ...ownershipToJson(ssh, 0o600, at) };
  return out as unknown as RawMount;
}

function ownershipToJson(o: PbObject, defaultMode: number, at: string): Record<string, unknown> {
  const uid = int(o, 'uid', at);
  const gid = int(o, 'gid', at);
  const mode = int(o, 'mode', at);
  return {
    ...(uid === 0 ? {} : { uid }),
    ...(gid === 0 ? {} : { gid }),
    ...(mode === defaultMode ? {} : { mode: octal(mode) }),
    ...(bool(o, 'optional') ? { optional: true } : {}),
  };
}

/** The filesystem a chain of actions started from: BuildKit looks user and group names up there. */
function chainRoot(actions: readonly { readonly input: number }[], index: number, inputCount: number): number {
  let input = actions[index]?.input ?? -1;
  for (let hops = 0; input >= inputCount && hops <= actions.length; hops++) input = actions[input - inputCount]?.input ?? -1;
  return input;
}

function timestampToJson(o: PbObject | undefined, at: string): { timestamp?: number | string } {
  const t = bigInt(o, 'timestamp');
  if (t === -1) return {};
  if (typeof t === 'number' && t < 0) fail(`${at}.timestamp`, `${t} is not a time: -1 means unset, else unix nanoseconds`);
  return { timestamp: t };
}

function actionToJson(a: PbObject, at: string, inputCount: number, all: readonly PbObject[]): RawFileAction {
  const numbers = all.map((x, i) => ({ input: int(x, 'input', `${at.replace(/\[\d+\]$/, '')}[${i}]`) }));
  const root = chainRoot(numbers, all.indexOf(a), inputCount);
  const input = int(a, 'input', at);
  const secondaryInput = int(a, 'secondaryInput', at);
  const output = int(a, 'output', at);
  const common = { input, ...(secondaryInput === -1 ? {} : { secondaryInput }), ...(output === -1 ? {} : { output }) };
  const ownerOf = (o: PbObject | undefined, where: string): { owner?: RawChown } => {
    const chown = msg(o, 'owner');
    return chown === undefined ? {} : { owner: chownToJson(chown, `${where}.owner`, root) };
  };
  if (a['copy'] !== undefined) {
    const c = msg(a, 'copy');
    const w = `${at}.copy`;
    const mode = int(c, 'mode', w);
    const modeStr = str(c, 'modeStr');
    if (modeStr !== '' && mode !== 0) fail(`${w}.mode`, `mode ${mode} beside modeStr "${modeStr}": BuildKit writes one or the other`);
    if (modeStr === '' && mode < -1) fail(`${w}.mode`, `${mode} is not a mode (-1 means unset)`);
    if (modeStr !== '' && parseOctalMode(modeStr) !== undefined) fail(`${w}.modeStr`, `"${modeStr}" is octal; BuildKit puts octal modes in mode`);
    const copy: RawCopy = {
      src: str(c, 'src'),
      dest: str(c, 'dest'),
      ...ownerOf(c, w),
      ...(modeStr !== '' ? { mode: modeStr } : mode === -1 ? {} : { mode: octal(mode) }),
      ...flags(c, ['followSymlink', 'dirCopyContents', 'createDestPath', 'allowWildcard', 'allowEmptyWildcard']),
      ...(bool(c, 'attemptUnpackDockerCompatibility') ? { attemptUnpack: true } : {}),
      ...(strings(c, 'include_patterns').length === 0 ? {} : { includePatterns: strings(c, 'include_patterns') }),
      ...(strings(c, 'exclude_patterns').length === 0 ? {} : { excludePatterns: strings(c, 'exclude_patterns') }),
      ...timestampToJson(c, w),
      ...flags(c, ['alwaysReplaceExistingDestPaths']),
      ...(strings(c, 'required_paths').length === 0 ? {} : { requiredPaths: strings(c, 'required_paths') }),
    };
    return { ...common, copy };
  }
  if (a['mkfile'] !== undefined) {
    const f = msg(a, 'mkfile');
    const w = `${at}.mkfile`;
    const data = (f?.['data'] as Uint8Array | undefined) ?? new Uint8Array();
    const text = Buffer.from(data).toString('utf8');
    const asText = Buffer.from(text, 'utf8').equals(data);
    const mode = int(f, 'mode', w);
    return {
      ...common,
      mkfile: {
        path: str(f, 'path'),
        ...(mode === 0o644 ? {} : { mode: octal(mode) }),
        ...(data.length === 0 ? {} : asText ? { data: text } : { dataBase64: Buffer.from(data).toString('base64') }),
        ...ownerOf(f, w),
        ...timestampToJson(f, w),
      },
    };
  }
  if (a['mkdir'] !== undefined) {
    const d = msg(a, 'mkdir');
    const w = `${at}.mkdir`;
    const mode = int(d, 'mode', w);
    return {
      ...common,
      mkdir: { path: str(d, 'path'), ...(mode === 0o755 ? {} : { mode: octal(mode) }), ...flags(d, ['makeParents']), ...ownerOf(d, w), ...timestampToJson(d, w) },
    };
  }
  if (a['rm'] !== undefined) {
    const r = msg(a, 'rm');
    return { ...common, rm: { path: str(r, 'path'), ...flags(r, ['allowNotFound', 'allowWildcard']) } };
  }
  if (a['symlink'] !== undefined) {
    const s = msg(a, 'symlink');
    const w = `${at}.symlink`;
    return { ...common, symlink: { oldpath: str(s, 'oldpath'), newpath: str(s, 'newpath'), ...ownerOf(s, w), ...timestampToJson(s, w) } };
  }
  return fail(at, 'the action has no body (copy, mkfile, mkdir, rm or symlink)');
}

function flags<K extends string>(o: PbObject | undefined, keys: readonly K[]): Partial<Record<K, true>> {
  const out: Partial<Record<K, true>> = {};
  for (const k of keys) if (bool(o, k)) out[k] = true;
  return out;
}

function chownToJson(c: PbObject, at: string, root: number): RawChown {
  const one = (k: 'user' | 'group'): { user?: number | string; group?: number | string } => {
    const u = msg(c, k);
    if (u === undefined) return {};
    const byName = msg(u, 'byName');
    if (byName !== undefined) {
      const input = int(byName, 'input', `${at}.${k}.byName`);
      if (input !== root) {
        fail(`${at}.${k}.byName.input`, `names are looked up in the filesystem the action chain starts from (${root}), not ${input}`);
      }
      return { [k]: str(byName, 'name') };
    }
    if (u['byID'] === undefined) fail(`${at}.${k}`, 'names neither byName nor byID');
    return { [k]: int(u, 'byID', `${at}.${k}`) };
  };
  return { ...one('user'), ...one('group') };
}

// ---- JSON → protobuf ----

function refOf(input: RawInput): { op: string; output: number } {
  return typeof input === 'string' ? { op: input, output: 0 } : input;
}

const modeBits = (mode: number | string | undefined, fallback: number): number =>
  mode === undefined ? fallback : typeof mode === 'number' ? mode : (parseOctalMode(mode) ?? fallback);

function timestampToPb(t: number | string | undefined): number | bigint {
  if (t === undefined) return -1;
  if (typeof t === 'number') return t;
  const big = BigInt(t);
  return big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
}

function chownToPb(owner: RawChown | undefined, root: number): PbObject | undefined {
  if (owner === undefined) return undefined;
  const one = (v: number | string | undefined): PbObject | undefined =>
    v === undefined ? undefined : typeof v === 'number' ? { byID: v } : { byName: { name: v, input: root } };
  return { user: one(owner.user), group: one(owner.group) };
}

function execToPb(e: RawExec): PbObject {
  const { meta } = e;
  const proxy = meta.proxyEnv;
  return {
    meta: {
      args: meta.args,
      env: meta.env ?? [],
      cwd: meta.cwd ?? '/',
      user: meta.user ?? '',
      proxy_env: proxy === undefined ? undefined : Object.fromEntries(PROXY_KEYS.map(([pbKey, jsonKey]) => [pbKey, proxy[jsonKey] ?? ''])),
      extraHosts: (meta.extraHosts ?? []).map((h) => ({ Host: h.host, IP: h.ip })),
      hostname: meta.hostname ?? '',
      ulimit: (meta.ulimit ?? []).map((u) => ({ Name: u.name, Soft: u.soft, Hard: u.hard })),
      cgroupParent: meta.cgroupParent ?? '',
      removeMountStubsRecursive: meta.removeMountStubsRecursive ?? false,
      validExitCodes: meta.validExitCodes ?? [],
    },
    mounts: e.mounts.map((m) => {
      const type = m.type ?? 'bind';
      return {
        input: m.input ?? -1,
        selector: m.selector ?? '',
        dest: m.dest,
        output: m.output ?? -1,
        readonly: m.readonly ?? false,
        mountType: PB_ENUMS.mountType.indexOf(type),
        TmpfsOpt: type === 'tmpfs' || m.tmpfs !== undefined ? { size: m.tmpfs?.size ?? 0 } : undefined,
        cacheOpt: type === 'cache' || m.cache !== undefined ? { ID: m.cache?.id ?? m.dest, sharing: PB_ENUMS.sharing.indexOf(m.cache?.sharing ?? 'shared') } : undefined,
        secretOpt:
          m.secret === undefined
            ? undefined
            : { ID: m.secret.id, uid: m.secret.uid ?? 0, gid: m.secret.gid ?? 0, mode: modeBits(m.secret.mode, 0o400), optional: m.secret.optional ?? false },
        SSHOpt:
          type === 'ssh' || m.ssh !== undefined
            ? { ID: m.ssh?.id ?? 'default', uid: m.ssh?.uid ?? 0, gid: m.ssh?.gid ?? 0, mode: modeBits(m.ssh?.mode, 0o600), optional: m.ssh?.optional ?? false }
            : undefined,
        contentCache: PB_ENUMS.contentCache.indexOf(m.contentCache ?? 'default'),
      };
    }),
    network: PB_ENUMS.network.indexOf(e.network ?? 'sandbox'),
    security: PB_ENUMS.security.indexOf(e.security ?? 'sandbox'),
    secretenv: (e.secretEnv ?? []).map((s) => ({ ID: s.id, name: s.name, optional: s.optional ?? false })),
  };
}

function actionToPb(a: RawFileAction, root: number): PbObject {
  const common = { input: a.input, secondaryInput: a.secondaryInput ?? -1, output: a.output ?? -1 };
  if ('copy' in a) {
    const c = a.copy;
    const chmod = typeof c.mode === 'string' && parseOctalMode(c.mode) === undefined;
    return {
      ...common,
      copy: {
        src: c.src,
        dest: c.dest,
        owner: chownToPb(c.owner, root),
        mode: c.mode === undefined ? -1 : chmod ? 0 : modeBits(c.mode, -1),
        followSymlink: c.followSymlink ?? false,
        dirCopyContents: c.dirCopyContents ?? false,
        attemptUnpackDockerCompatibility: c.attemptUnpack ?? false,
        createDestPath: c.createDestPath ?? false,
        allowWildcard: c.allowWildcard ?? false,
        allowEmptyWildcard: c.allowEmptyWildcard ?? false,
        timestamp: timestampToPb(c.timestamp),
        include_patterns: c.includePatterns ?? [],
        exclude_patterns: c.excludePatterns ?? [],
        alwaysReplaceExistingDestPaths: c.alwaysReplaceExistingDestPaths ?? false,
        modeStr: chmod ? (c.mode) : '',
        required_paths: c.requiredPaths ?? [],
      },
    };
  }
  if ('mkfile' in a) {
    const f = a.mkfile;
    const data = f.dataBase64 !== undefined ? Uint8Array.from(Buffer.from(f.dataBase64, 'base64')) : new TextEncoder().encode(f.data ?? '');
    return { ...common, mkfile: { path: f.path, mode: modeBits(f.mode, 0o644), data, owner: chownToPb(f.owner, root), timestamp: timestampToPb(f.timestamp) } };
  }
  if ('mkdir' in a) {
    const d = a.mkdir;
    return { ...common, mkdir: { path: d.path, mode: modeBits(d.mode, 0o755), makeParents: d.makeParents ?? false, owner: chownToPb(d.owner, root), timestamp: timestampToPb(d.timestamp) } };
  }
  if ('rm' in a) return { ...common, rm: { path: a.rm.path, allowNotFound: a.rm.allowNotFound ?? false, allowWildcard: a.rm.allowWildcard ?? false } };
  const s = a.symlink;
  return { ...common, symlink: { oldpath: s.oldpath, newpath: s.newpath, owner: chownToPb(s.owner, root), timestamp: timestampToPb(s.timestamp) } };
}

function metadataToPb(md: RawMetadata): PbObject {
  const group = md.progressGroup as { id: string; name: string; weak?: boolean } | undefined;
  return {
    ignore_cache: md.ignoreCache ?? false,
    description: md.description ?? {},
    export_cache: md.exportCache === undefined ? undefined : { Value: md.exportCache },
    caps: md.caps ?? {},
    progress_group: group === undefined ? undefined : { id: group.id, name: group.name, weak: group.weak ?? false },
  };
}

/** The body, platform and constraints of a raw op as a pb.Op, its inputs already resolved to digests. */
function opToPb(op: RawOp, inputs: readonly PbObject[]): PbObject {
  const platform = op.platform === undefined ? undefined : { OS: op.platform.os, Architecture: op.platform.architecture, Variant: op.platform.variant ?? '' };
  const constraints = op.constraints === undefined ? undefined : { filter: op.constraints };
  const common = { inputs, platform, constraints };
  if ('exec' in op) return { ...common, exec: execToPb(op.exec) };
  if ('source' in op) return { ...common, source: { identifier: op.source.identifier, attrs: op.source.attrs ?? {} } };
  if ('file' in op) {
    const actions = op.file.actions;
    return { ...common, file: { actions: actions.map((a, i) => actionToPb(a, chainRoot(actions, i, inputs.length))) } };
  }
  if ('merge' in op) return { ...common, merge: { inputs: op.merge.inputs.map((input) => ({ input })) } };
  return { ...common, diff: { lower: { input: op.diff.lower }, upper: { input: op.diff.upper } } };
}

/**
 * Encodes JSON LLB (already validated by the loader) as pb.Definition
 * entries: the ops the result needs, each after its inputs, in the order
 * BuildKit's client marshals them (depth first along each op's inputs), then
 * the result pointer with the caps BuildKit's client gives it. The `image`
 * config has no place in a Definition (a frontend returns it beside).
 */
export function jsonToEntries(raw: RawDefinition): PbOpEntry[] {
  const entries: PbOpEntry[] = [];
  if (raw.result === null) return entries;
  const digests = new Map<string, Digest>();
  const seen = new Set<Digest>();
  // Iterative depth-first postorder, so a 100,000-op chain does not overflow the stack.
  const stack: { name: string; next: number }[] = [{ name: refOf(raw.result).op, next: 0 }];
  const onStack = new Set<string>([refOf(raw.result).op]);
  while (stack.length > 0) {
    const top = stack[stack.length - 1] as { name: string; next: number };
    const op = raw.ops[top.name];
    if (op === undefined) fail(`ops.${top.name}`, 'no such op');
    const inputs = op.inputs ?? [];
    const pending = inputs.slice(top.next).findIndex((input) => !digests.has(refOf(input).op));
    if (pending !== -1) {
      top.next += pending;
      const name = refOf(inputs[top.next] as RawInput).op;
      if (onStack.has(name)) fail(`ops.${name}`, 'cycle');
      onStack.add(name);
      stack.push({ name, next: 0 });
      continue;
    }
    stack.pop();
    onStack.delete(top.name);
    const pbInputs = inputs.map((input) => ({ digest: digests.get(refOf(input).op) ?? '', index: refOf(input).output }));
    const decoded = opToPb(op, pbInputs);
    const bytes = encodePb('Op', decoded, `ops.${top.name}`);
    const digest = sha256(bytes);
    digests.set(top.name, digest);
    if (seen.has(digest)) continue;
    seen.add(digest);
    entries.push({ bytes, digest, op: decoded, metadata: op.metadata === undefined ? undefined : metadataToPb(op.metadata) });
  }
  const result = refOf(raw.result);
  const terminal: PbObject = { inputs: [{ digest: digests.get(result.op) ?? '', index: result.output }] };
  const bytes = encodePb('Op', terminal);
  entries.push({ bytes, digest: sha256(bytes), op: terminal, metadata: terminalMetadata(entries) });
  return entries;
}

/** The caps BuildKit's client puts on the result pointer: constraints and platform, and the metadata features any op uses. */
function terminalMetadata(entries: readonly PbOpEntry[]): PbObject {
  const caps: Record<string, boolean> = { constraints: true, platform: true };
  for (const { metadata } of entries) {
    if (metadata === undefined) continue;
    if (metadata['ignore_cache'] === true) caps['meta.ignorecache'] = true;
    if (Object.keys((metadata['description'] ?? {}) as object).length > 0) caps['meta.description'] = true;
    if (metadata['export_cache'] !== undefined) caps['meta.exportcache'] = true;
  }
  return { caps };
}

/** The value of a decoded field, for callers outside this module that inspect ops. */
export type { PbObject, PbValue };
