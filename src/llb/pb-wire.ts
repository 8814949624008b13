/**
 * Protobuf wire format for the messages of pb-schema.ts: a decoder into
 * plain objects and a deterministic encoder that writes what Go's
 * `proto.MarshalOptions{Deterministic: true}` writes for the same message
 * (fields in number order, proto3 zero values left out except in oneofs,
 * present sub-messages written even when empty, repeated numbers packed,
 * map entries sorted by key with both key and value always written). That
 * is what makes an op re-encoded by kiln hash to BuildKit's digest.
 */
import { isUtf8 } from 'node:buffer';
import { isMessageName, type PbField, type PbMessageName, type PbObject, type PbScalar, type PbValue, pbMessage } from './pb-schema.js';

/** A malformed message, with where in it the problem is. */
export class PbWireError extends Error {
  readonly where: string;
  constructor(where: string, message: string) {
    super(`${where}: ${message}`);
    this.name = 'PbWireError';
    this.where = where;
  }
}

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;
const TWO_32 = 2 ** 32;

class Reader {
  pos: number;
  readonly buf: Buffer;
  readonly end: number;
  constructor(buf: Buffer, pos: number, end: number) {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
  }

  /** An unsigned varint: a number when it is below 2^53, else a bigint (two's complement of a negative int64). */
  varint(where: string): number | bigint {
    const { buf, end } = this;
    let result = 0;
    let mul = 1;
    const start = this.pos;
    for (let i = 0; i < 7; i++) {
      if (this.pos >= end) throw new PbWireError(where, 'truncated varint');
      const b = buf[this.pos++] ?? 0;
      result += (b & 0x7f) * mul;
      if (b < 0x80) return result;
      mul *= 128;
    }
    // Over 49 bits: exact arithmetic from the start.
    this.pos = start;
    let big = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      if (this.pos >= end) throw new PbWireError(where, 'truncated varint');
      const b = buf[this.pos++] ?? 0;
      big |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) {
        big = BigInt.asUintN(64, big);
        return big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
      }
    }
    throw new PbWireError(where, 'varint longer than 10 bytes');
  }

  length(where: string): number {
    const n = this.varint(where);
    if (typeof n !== 'number' || n > this.end - this.pos) throw new PbWireError(where, 'length runs past the end of the message');
    return n;
  }

  skip(wireType: number, where: string): void {
    if (wireType === WIRE_VARINT) this.varint(where);
    else if (wireType === WIRE_FIXED64) this.pos += 8;
    else if (wireType === WIRE_FIXED32) this.pos += 4;
    else if (wireType === WIRE_LEN) this.pos += this.length(where);
    else throw new PbWireError(where, `unsupported wire type ${wireType}`);
    if (this.pos > this.end) throw new PbWireError(where, 'truncated field');
  }
}

/** A varint as the scalar type says: int32 and enums sign-extended, uint32 truncated, int64 signed. */
function fromVarint(raw: number | bigint, type: PbScalar): number | bigint | boolean {
  switch (type) {
    case 'bool':
      return raw !== 0;
    case 'int32':
    case 'enum':
      return typeof raw === 'number' ? Number(BigInt.asIntN(32, BigInt(raw))) : Number(BigInt.asIntN(32, raw));
    case 'uint32':
      return typeof raw === 'number' ? raw % TWO_32 : Number(BigInt.asUintN(32, raw));
    case 'int64': {
      if (typeof raw === 'number') return raw;
      const signed = BigInt.asIntN(64, raw);
      return signed >= BigInt(Number.MIN_SAFE_INTEGER) && signed <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(signed) : signed;
    }
    default:
      return raw;
  }
}

/** A proto3 string: UTF-8, checked (Go rejects invalid UTF-8 in a string field). */
function readString(buf: Buffer, start: number, end: number, where: string): string {
  for (let i = start; i < end; i++) {
    if ((buf[i] ?? 0) >= 0x80) {
      const bytes = buf.subarray(start, end);
      if (!isUtf8(bytes)) throw new PbWireError(where, 'string is not valid UTF-8');
      return bytes.toString('utf8');
    }
  }
  // ASCII: the native latin1 decoder is the cheapest exact one.
  return buf.toString('latin1', start, end);
}

function isPackable(type: PbScalar): boolean {
  return type !== 'string' && type !== 'bytes';
}

function readScalar(r: Reader, type: PbScalar, wireType: number, where: string): PbValue {
  if (type === 'string' || type === 'bytes') {
    if (wireType !== WIRE_LEN) throw new PbWireError(where, `wire type ${wireType} for a ${type}`);
    const n = r.length(where);
    const start = r.pos;
    r.pos += n;
    return type === 'string' ? readString(r.buf, start, r.pos, where) : new Uint8Array(r.buf.subarray(start, r.pos));
  }
  if (wireType !== WIRE_VARINT) throw new PbWireError(where, `wire type ${wireType} for a ${type}`);
  return fromVarint(r.varint(where), type);
}

type Mutable = Record<string, PbValue | undefined>;

function readMapEntry(r: Reader, valueType: string, where: string): [string, PbValue] {
  const n = r.length(where);
  const end = r.pos + n;
  const sub = new Reader(r.buf, r.pos, end);
  let key = '';
  let value: PbValue | undefined;
  while (sub.pos < end) {
    const tag = sub.varint(where);
    if (typeof tag !== 'number') throw new PbWireError(where, 'field tag out of range');
    const no = Math.floor(tag / 8);
    const wt = tag % 8;
    if (no === 1) key = readScalar(sub, 'string', wt, `${where}.key`) as string;
    else if (no === 2) {
      if (isMessageName(valueType)) {
        if (wt !== WIRE_LEN) throw new PbWireError(where, `wire type ${wt} for a message`);
        const len = sub.length(where);
        value = decodeRange(valueType, sub.buf, sub.pos, sub.pos + len, `${where}[value]`);
        sub.pos += len;
      } else value = readScalar(sub, valueType as PbScalar, wt, `${where}[value]`);
    } else sub.skip(wt, where);
  }
  r.pos = end;
  if (value === undefined) value = isMessageName(valueType) ? {} : zeroOf(valueType as PbScalar);
  return [key, value];
}

function zeroOf(type: PbScalar): PbValue {
  if (type === 'string') return '';
  if (type === 'bytes') return new Uint8Array();
  if (type === 'bool') return false;
  return 0;
}

function decodeRange(type: PbMessageName, buf: Buffer, start: number, end: number, where: string): PbObject {
  const schema = pbMessage(type);
  const out: Mutable = {};
  const r = new Reader(buf, start, end);
  while (r.pos < end) {
    const tag = r.varint(where);
    if (typeof tag !== 'number' || tag < 8) throw new PbWireError(where, 'invalid field tag');
    const no = Math.floor(tag / 8);
    const wt = tag % 8;
    const field = schema.byNumber.get(no);
    if (field === undefined) {
      throw new PbWireError(where, `field number ${no} is not a field of pb.${type} that kiln knows (a newer BuildKit?)`);
    }
    readField(r, field, wt, where, out);
  }
  return out;
}

function readField(r: Reader, field: PbField, wt: number, where: string, out: Mutable): void {
  // The field's path is built only when something is wrong: a string per field would be most of the garbage.
  const at = (): string => `${where}.${field.name}`;
  switch (field.kind) {
    case 'map': {
      const map = (out[field.name] ??= Object.create(null) as Record<string, PbValue>) as Record<string, PbValue>;
      const [key, value] = readMapEntry(r, field.value, where);
      map[key] = value;
      return;
    }
    case 'message': {
      if (wt !== WIRE_LEN) throw new PbWireError(at(), `wire type ${wt} for a message`);
      const n = r.length(where);
      const value = decodeRange(field.type, r.buf, r.pos, r.pos + n, at());
      r.pos += n;
      if (field.repeated === true) ((out[field.name] ??= []) as PbValue[]).push(value);
      else setSingle(out, field, value);
      return;
    }
    case 'scalar': {
      if (field.repeated !== true) {
        setSingle(out, field, readScalar(r, field.type, wt, where));
        return;
      }
      const list = (out[field.name] ??= []) as PbValue[];
      if (wt === WIRE_LEN && isPackable(field.type)) {
        const len = r.length(where);
        const end = r.pos + len;
        while (r.pos < end) list.push(fromVarint(r.varint(where), field.type));
        if (r.pos !== end) throw new PbWireError(at(), 'packed list overruns its length');
      } else list.push(readScalar(r, field.type, wt, where));
      return;
    }
  }
}

/** A oneof keeps only its last member, as protobuf's merge does. */
function setSingle(out: Mutable, field: PbField, value: PbValue): void {
  if (field.kind !== 'map' && field.oneof !== undefined) {
    // `delete` only when there is something to drop: it turns the object into a slow dictionary.
    for (const other of SIBLINGS.get(field) ?? []) if (out[other] !== undefined) delete out[other];
  }
  out[field.name] = value;
}

/** The other members of each oneof field's oneof. */
const SIBLINGS = new WeakMap<PbField, readonly string[]>();

function registerSiblings(type: PbMessageName, seen = new Set<string>()): void {
  if (seen.has(type)) return;
  seen.add(type);
  const { fields } = pbMessage(type);
  for (const f of fields) {
    if (f.kind !== 'map' && f.oneof !== undefined) {
      SIBLINGS.set(
        f,
        fields.filter((o) => o.kind !== 'map' && o.oneof === f.oneof && o.name !== f.name).map((o) => o.name),
      );
    }
    if (f.kind === 'message') registerSiblings(f.type, seen);
    if (f.kind === 'map' && isMessageName(f.value)) registerSiblings(f.value, seen);
  }
}
registerSiblings('Definition');
registerSiblings('Op');

/** Decodes one message of `type` from its wire bytes; throws PbWireError naming the field at fault. */
export function decodePb(type: PbMessageName, bytes: Uint8Array, where: string = type): PbObject {
  return decodeRange(type, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), 0, bytes.length, where);
}

// ---- encoding ----

class Writer {
  buf = new Uint8Array(256);
  len = 0;

  ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  byte(b: number): void {
    this.ensure(1);
    this.buf[this.len++] = b;
  }

  /** An unsigned varint of a non-negative safe integer. */
  uvarint(n: number): void {
    this.ensure(10);
    while (n >= 0x80) {
      this.buf[this.len++] = (n % 128) | 0x80;
      n = Math.floor(n / 128);
    }
    this.buf[this.len++] = n;
  }

  /** A varint of any int64/uint64 value; negatives in two's complement (10 bytes), as Go writes them. */
  varint(v: number | bigint): void {
    if (typeof v === 'number' && v >= 0 && Number.isSafeInteger(v)) {
      this.uvarint(v);
      return;
    }
    let big = BigInt.asUintN(64, BigInt(v));
    this.ensure(10);
    while (big >= 0x80n) {
      this.buf[this.len++] = Number(big & 0x7fn) | 0x80;
      big >>= 7n;
    }
    this.buf[this.len++] = Number(big);
  }

  bytes(b: Uint8Array): void {
    this.uvarint(b.length);
    this.ensure(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  tag(no: number, wt: number): void {
    this.uvarint(no * 8 + wt);
  }

  result(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

const utf8 = new TextEncoder();

function isZero(v: PbValue | undefined): boolean {
  return v === undefined || v === '' || v === 0 || v === 0n || v === false || (v instanceof Uint8Array && v.length === 0);
}

function numeric(v: PbValue, type: PbScalar, where: string): number | bigint {
  if (typeof v === 'boolean') return v ? 1 : 0;
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number' && Number.isInteger(v)) {
    if (type === 'uint32' && (v < 0 || v >= TWO_32)) throw new PbWireError(where, `${v} is out of range for a uint32`);
    if ((type === 'int32' || type === 'enum') && (v < -(2 ** 31) || v >= 2 ** 31)) throw new PbWireError(where, `${v} is out of range for an int32`);
    return v;
  }
  throw new PbWireError(where, `expected an integer, got ${typeof v}`);
}

function writeScalar(w: Writer, no: number, type: PbScalar, v: PbValue, where: string): void {
  if (type === 'string') {
    if (typeof v !== 'string') throw new PbWireError(where, 'expected a string');
    w.tag(no, WIRE_LEN);
    w.bytes(utf8.encode(v));
  } else if (type === 'bytes') {
    if (!(v instanceof Uint8Array)) throw new PbWireError(where, 'expected bytes');
    w.tag(no, WIRE_LEN);
    w.bytes(v);
  } else {
    w.tag(no, WIRE_VARINT);
    w.varint(numeric(v, type, where));
  }
}

/** Go's deterministic order of string map keys: bytewise over UTF-8. */
function compareKeys(a: string, b: string): number {
   
  if (/^[\x00-\x7f]*$/.test(a + b)) return a < b ? -1 : a > b ? 1 : 0;
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function writeMessage(w: Writer, no: number, type: PbMessageName, v: PbValue, where: string): void {
  if (typeof v !== 'object' || v === null || Array.isArray(v) || v instanceof Uint8Array) throw new PbWireError(where, `expected a pb.${type}`);
  w.tag(no, WIRE_LEN);
  w.bytes(encodePb(type, v as PbObject, where));
}

function writeField(w: Writer, field: PbField, v: PbValue, at: string): void {
  switch (field.kind) {
    case 'map': {
      const map = v as Record<string, PbValue>;
      for (const key of Object.keys(map).sort(compareKeys)) {
        const entry = new Writer();
        writeScalar(entry, 1, 'string', key, at);
        const value = map[key] as PbValue;
        if (isMessageName(field.value)) writeMessage(entry, 2, field.value, value, `${at}[${key}]`);
        else writeScalar(entry, 2, field.value, value, `${at}[${key}]`);
        w.tag(field.no, WIRE_LEN);
        w.bytes(entry.result());
      }
      return;
    }
    case 'message':
      if (field.repeated === true) (v as readonly PbValue[]).forEach((item, i) => writeMessage(w, field.no, field.type, item, `${at}[${i}]`));
      else writeMessage(w, field.no, field.type, v, at);
      return;
    case 'scalar': {
      if (field.repeated !== true) {
        writeScalar(w, field.no, field.type, v, at);
        return;
      }
      const list = v as readonly PbValue[];
      if (list.length === 0) return;
      if (isPackable(field.type)) {
        const packed = new Writer();
        list.forEach((item, i) => packed.varint(numeric(item, field.type, `${at}[${i}]`)));
        w.tag(field.no, WIRE_LEN);
        w.bytes(packed.result());
      } else list.forEach((item, i) => writeScalar(w, field.no, field.type, item, `${at}[${i}]`));
      return;
    }
  }
}

/** Encodes a message of `type` deterministically, as Go's deterministic marshal does. */
export function encodePb(type: PbMessageName, value: PbObject, where: string = type): Uint8Array {
  const w = new Writer();
  const schema = pbMessage(type);
  for (const key of Object.keys(value)) {
    if (value[key] !== undefined && !schema.fields.some((f) => f.name === key)) throw new PbWireError(where, `pb.${type} has no field "${key}"`);
  }
  for (const field of schema.fields) {
    const v = value[field.name];
    if (v === undefined) continue;
    const inOneof = field.kind !== 'map' && field.oneof !== undefined;
    // proto3: a zero scalar is not written, unless it is the member a oneof holds.
    if (field.kind === 'scalar' && field.repeated !== true && !inOneof && isZero(v)) continue;
    writeField(w, field, v, `${where}.${field.name}`);
  }
  return w.result();
}
