/**
 * The JSON-lines format of `buildctl debug dump-llb`: one
 * `{"Op": …, "Digest": "sha256:…", "OpMetadata": …}` object per op, in the
 * Definition's order, as Go's encoding/json writes the generated structs:
 * each field under its proto name and left out when zero, a oneof as an
 * object under its Go name (`"Op": {"exec": …}`), enums as numbers, bytes
 * as base64, map keys sorted, and `<`, `>`, `&` escaped.
 */
import { sha256 } from '../digest.js';
import { isMessageName, type PbField, type PbMessageName, type PbObject, type PbScalar, type PbValue, pbMessage } from './pb-schema.js';
import { encodePb, PbWireError } from './pb-wire.js';

/** A value as encoding/json prints it; bigints are printed as bare integers. */
type GoJson = string | number | bigint | boolean | null | readonly GoJson[] | { readonly [key: string]: GoJson };

function isZeroScalar(v: PbValue): boolean {
  return v === '' || v === 0 || v === 0n || v === false || (v instanceof Uint8Array && v.length === 0);
}

function scalarToJson(v: PbValue, type: PbScalar): GoJson {
  if (type === 'bytes') return Buffer.from(v as Uint8Array).toString('base64');
  return v as GoJson;
}

/** A decoded message as Go's encoding/json writes its generated struct (omitempty on every field). */
export function toGoJson(type: PbMessageName, obj: PbObject): { [key: string]: GoJson } {
  const schema = pbMessage(type);
  const out: Record<string, GoJson> = {};
  const oneofsDone = new Set<string>();
  for (const field of schema.fields) {
    if (field.kind !== 'map' && field.oneof !== undefined) {
      // The oneof appears once, at its first member's place, holding the member that is set.
      if (oneofsDone.has(field.oneof)) continue;
      oneofsDone.add(field.oneof);
      const member = schema.fields.find((f) => f.kind !== 'map' && f.oneof === field.oneof && obj[f.name] !== undefined);
      if (member === undefined) continue;
      const value = obj[member.name] as PbValue;
      const inner = fieldToJson(member, value);
      out[schema.oneofs[field.oneof] ?? field.oneof] = inner === undefined ? {} : { [member.name]: inner };
      continue;
    }
    const v = obj[field.name];
    if (v === undefined) continue;
    const json = fieldToJson(field, v);
    if (json !== undefined) out[field.name] = json;
  }
  return out;
}

function fieldToJson(field: PbField, v: PbValue): GoJson | undefined {
  switch (field.kind) {
    case 'map': {
      const map = v as Record<string, PbValue>;
      const keys = Object.keys(map);
      if (keys.length === 0) return undefined;
      const out: Record<string, GoJson> = {};
      for (const key of keys.sort()) {
        const value = map[key] as PbValue;
        out[key] = isMessageName(field.value) ? toGoJson(field.value, value as PbObject) : scalarToJson(value, field.value);
      }
      return out;
    }
    case 'message':
      if (field.repeated === true) {
        const list = v as readonly PbObject[];
        return list.length === 0 ? undefined : list.map((item) => toGoJson(field.type, item));
      }
      return toGoJson(field.type, v as PbObject);
    case 'scalar':
      if (field.repeated === true) {
        const list = v as readonly PbValue[];
        return list.length === 0 ? undefined : list.map((item) => scalarToJson(item, field.type));
      }
      return isZeroScalar(v) ? undefined : scalarToJson(v, field.type);
  }
}

function expectObject(json: unknown, where: string): Record<string, unknown> {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new PbWireError(where, 'expected an object');
  return json as Record<string, unknown>;
}

function scalarFromJson(json: unknown, type: PbScalar, where: string): PbValue {
  switch (type) {
    case 'string':
      if (typeof json === 'string') return json;
      break;
    case 'bytes':
      if (typeof json === 'string' && /^[A-Za-z0-9+/]*={0,2}$/.test(json)) return Uint8Array.from(Buffer.from(json, 'base64'));
      break;
    case 'bool':
      if (typeof json === 'boolean') return json;
      break;
    default:
      if (typeof json === 'number' && Number.isSafeInteger(json)) return json;
      // Integers too long for a double were quoted by readDumpLine, so they arrive exact.
      if (typeof json === 'string' && /^-?\d+$/.test(json)) {
        const big = BigInt(json);
        return big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
      }
  }
  throw new PbWireError(where, `expected a ${type}, got ${JSON.stringify(json)}`);
}

function fieldFromJson(field: PbField, json: unknown, where: string): PbValue {
  switch (field.kind) {
    case 'map': {
      const out = Object.create(null) as Record<string, PbValue>;
      for (const [key, value] of Object.entries(expectObject(json, where))) {
        out[key] = isMessageName(field.value) ? fromGoJson(field.value, value, `${where}[${key}]`) : scalarFromJson(value, field.value, `${where}[${key}]`);
      }
      return out;
    }
    case 'message':
      if (field.repeated === true) {
        if (!Array.isArray(json)) throw new PbWireError(where, 'expected a list');
        return json.map((item, i) => fromGoJson(field.type, item, `${where}[${i}]`));
      }
      return fromGoJson(field.type, json, where);
    case 'scalar':
      if (field.repeated === true) {
        if (!Array.isArray(json)) throw new PbWireError(where, 'expected a list');
        return json.map((item, i) => scalarFromJson(item, field.type, `${where}[${i}]`));
      }
      return scalarFromJson(json, field.type, where);
  }
}

/** The inverse of toGoJson: a message from encoding/json's shape; unknown keys are errors. */
export function fromGoJson(type: PbMessageName, json: unknown, where: string = type): PbObject {
  const schema = pbMessage(type);
  const out: Record<string, PbValue> = {};
  for (const [key, value] of Object.entries(expectObject(json, where))) {
    if (value === null) continue;
    const oneof = Object.entries(schema.oneofs).find(([, goName]) => goName === key)?.[0];
    if (oneof !== undefined) {
      const entries = Object.entries(expectObject(value, `${where}.${key}`));
      const members = schema.fields.filter((f) => f.kind !== 'map' && f.oneof === oneof);
      if (entries.length === 0) {
        // encoding/json leaves a zero scalar member out, so `{}` is a oneof holding a zero scalar.
        const scalar = members.find((f) => f.kind === 'scalar');
        if (scalar === undefined) throw new PbWireError(`${where}.${key}`, 'names none of its members');
        out[scalar.name] = scalar.kind === 'scalar' ? (scalar.type === 'string' ? '' : 0) : 0;
        continue;
      }
      for (const [memberName, memberValue] of entries) {
        const member = members.find((f) => f.name === memberName);
        if (member === undefined) throw new PbWireError(`${where}.${key}`, `"${memberName}" is not a member of pb.${type}'s ${oneof}`);
        out[member.name] = fieldFromJson(member, memberValue, `${where}.${key}.${memberName}`);
      }
      continue;
    }
    const field = schema.fields.find((f) => f.name === key && (f.kind === 'map' || f.oneof === undefined));
    if (field === undefined) throw new PbWireError(where, `pb.${type} has no field "${key}"`);
    out[field.name] = fieldFromJson(field, value, `${where}.${key}`);
  }
  return out;
}

/** Serializes as Go's json.Encoder does (HTML-safe escapes, bigints as bare integers), one line. */
export function stringifyGo(value: GoJson): string {
  if (value === null) return 'null';
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'string') {
    return JSON.stringify(value).replace(/[<>&\u2028\u2029]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`);
  }
  if (typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${(value as readonly GoJson[]).map(stringifyGo).join(',')}]`;
  const obj = value as { readonly [key: string]: GoJson };
  return `{${Object.keys(obj)
    .map((k) => `${stringifyGo(k)}:${stringifyGo(obj[k] as GoJson)}`)
    .join(',')}}`;
}

/** Quotes integer literals too long for a double (outside strings), so JSON.parse keeps them exact. */
function quoteLongIntegers(line: string): string {
  if (!/\d{16}/.test(line)) return line;
  let out = '';
  let i = 0;
  while (i < line.length) {
    const ch = line[i] ?? '';
    if (ch === '"') {
      let j = i + 1;
      while (j < line.length && line[j] !== '"') j += line[j] === '\\' ? 2 : 1;
      out += line.slice(i, j + 1);
      i = j + 1;
      continue;
    }
    const m = /^-?\d{16,}(?![.eE\d])/.exec(line.slice(i, i + 40));
    if (m !== null && !/[\d.]/.test(line[i - 1] ?? '')) {
      out += `"${m[0]}"`;
      i += m[0].length;
      continue;
    }
    out += ch;
    i++;
  }
  return out;
}

/** One op of a dump: its decoded Op, its digest and its metadata (undefined when empty). */
export interface DumpEntry {
  readonly op: PbObject;
  readonly bytes: Uint8Array;
  readonly digest: string;
  readonly metadata: PbObject | undefined;
}

/**
 * Reads `buildctl debug dump-llb` output. Each op is re-encoded and must hash
 * to the digest the line gives (else the line does not describe the bytes
 * BuildKit hashed, and every digest naming it would dangle).
 */
export function parseDumpLlb(text: string): DumpEntry[] {
  const entries: DumpEntry[] = [];
  const lines = text.split('\n');
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (line === '') return;
    const where = `line ${i + 1}`;
    let json: unknown;
    try {
      json = JSON.parse(quoteLongIntegers(line));
    } catch (err) {
      throw new PbWireError(where, `not JSON (${(err as Error).message})`);
    }
    const top = expectObject(json, where);
    const extra = Object.keys(top).filter((k) => k !== 'Op' && k !== 'Digest' && k !== 'OpMetadata');
    if (extra.length > 0 || !('Op' in top)) throw new PbWireError(where, `expected {"Op", "Digest", "OpMetadata"}, got keys ${Object.keys(top).join(', ')}`);
    const op = fromGoJson('Op', top['Op'], `${where}.Op`);
    const bytes = encodePb('Op', op, `${where}.Op`);
    const digest = sha256(bytes);
    if (top['Digest'] !== undefined && top['Digest'] !== digest) {
      throw new PbWireError(`${where}.Digest`, `the op encodes to ${digest}, not ${String(top['Digest'])}: kiln cannot reproduce the bytes BuildKit hashed`);
    }
    const md = top['OpMetadata'] === null || top['OpMetadata'] === undefined ? undefined : fromGoJson('OpMetadata', top['OpMetadata'], `${where}.OpMetadata`);
    entries.push({ op, bytes, digest, metadata: md === undefined || Object.keys(md).length === 0 ? undefined : md });
  });
  if (entries.length === 0) throw new PbWireError('line 1', 'no ops');
  return entries;
}

/** Writes ops as `buildctl debug dump-llb` does: one line per op, OpMetadata `{}` when it has none. */
export function formatDumpLlb(entries: readonly { readonly op: PbObject; readonly digest: string; readonly metadata: PbObject | undefined }[]): string {
  return entries
    .map((e) => `${stringifyGo({ Op: toGoJson('Op', e.op), Digest: e.digest, OpMetadata: toGoJson('OpMetadata', e.metadata ?? {}) })}\n`)
    .join('');
}
