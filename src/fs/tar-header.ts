/**
 * Encodes tar headers: a POSIX ustar block, preceded by a pax extended header
 * when a field does not fit ustar (long or non-ASCII names, big sizes or ids,
 * sub-second mtimes, xattrs).
 *
 * Written here rather than through tar-stream because tar-stream turns pax
 * values into UTF-8 text, and xattr values are bytes: `security.capability`
 * is a binary struct that would come out corrupted. GNU tar and Go's
 * archive/tar both store `SCHILY.xattr.*` values as raw bytes, as we do.
 */

/** The entry kinds a tar stream can hold (sockets cannot be archived). */
export type TarEntryType = 'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'dir' | 'fifo';

const TYPEFLAG: Readonly<Record<TarEntryType, string>> = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  char: '3',
  block: '4',
  dir: '5',
  fifo: '6',
};

/** What one archive entry says about itself. */
export interface TarHeader {
  /** Path inside the archive, `/`-separated, no leading `/` or `./`; dirs without the trailing slash. */
  readonly name: string;
  readonly type: TarEntryType;
  /** Permission bits including setuid/setgid/sticky (`mode & 0o7777`). */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** Body size; 0 for everything but regular files. */
  readonly size: bigint;
  /** Modification time in nanoseconds since the epoch. */
  readonly mtimeNs: bigint;
  /** Target of a symlink, or the first archived path of a hardlink. */
  readonly linkname?: string;
  readonly devmajor?: number;
  readonly devminor?: number;
  /** Extended attributes as name and raw value, in the order to write them. */
  readonly xattrs?: readonly (readonly [string, Uint8Array])[];
}

const BLOCK = 512;
const NS_PER_S = 1_000_000_000n;

/** Two zero blocks: the end of an archive. */
export const END_OF_ARCHIVE: Buffer = Buffer.alloc(2 * BLOCK);

/** The zero bytes that pad a body of `size` bytes to a whole block. */
export function bodyPadding(size: bigint): Buffer {
  const rest = Number(size % BigInt(BLOCK));
  return Buffer.alloc(rest === 0 ? 0 : BLOCK - rest);
}

/** The header blocks of one entry: a pax extended header when needed, then the ustar header. */
export function encodeTarHeader(header: TarHeader): Buffer {
  const name = header.type === 'dir' ? `${header.name}/` : header.name;
  const pax: Buffer[] = [];
  const paxText = (key: string, value: string): void => {
    pax.push(paxRecord(key, Buffer.from(value, 'utf8')));
  };

  const split = splitUstarName(name);
  if (split === undefined) paxText('path', name);
  const linkname = header.linkname ?? '';
  if (!fitsUstarText(linkname, 100)) paxText('linkpath', linkname);
  if (!fitsOctal(header.size, 12)) paxText('size', header.size.toString());
  if (!fitsOctal(BigInt(header.uid), 8)) paxText('uid', String(header.uid));
  if (!fitsOctal(BigInt(header.gid), 8)) paxText('gid', String(header.gid));
  const seconds = floorDiv(header.mtimeNs, NS_PER_S);
  if (header.mtimeNs % NS_PER_S !== 0n || !fitsOctal(seconds, 12)) paxText('mtime', paxTime(header.mtimeNs));
  for (const [attr, value] of header.xattrs ?? []) {
    pax.push(paxRecord(`SCHILY.xattr.${escapeXattrName(attr)}`, value));
  }

  const ustar = ustarBlock({
    name: split ?? { prefix: '', name: asciiStandIn(name, 100) },
    typeflag: TYPEFLAG[header.type],
    mode: header.mode & 0o7777,
    uid: header.uid,
    gid: header.gid,
    size: header.size,
    mtime: seconds,
    linkname: fitsUstarText(linkname, 100) ? linkname : asciiStandIn(linkname, 100),
    devmajor: header.devmajor ?? 0,
    devminor: header.devminor ?? 0,
  });
  if (pax.length === 0) return ustar;

  const body = Buffer.concat(pax);
  const base = name.replace(/\/$/, '').split('/').pop() ?? '';
  const paxHeader = ustarBlock({
    name: { prefix: '', name: asciiStandIn(`PaxHeaders/${base}`, 100) },
    typeflag: 'x',
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: BigInt(body.length),
    mtime: seconds,
    linkname: '',
    devmajor: 0,
    devminor: 0,
  });
  return Buffer.concat([paxHeader, body, bodyPadding(BigInt(body.length)), ustar]);
}

/** Octal fields of 8 and 12 bytes hold 7 and 11 digits (and a NUL). */
const MAX_OCTAL_7 = 8 ** 7;
const MAX_OCTAL_11N = 8n ** 11n;
/** Bytes 257-264 of every ustar header: the magic and the version. */
const USTAR_MAGIC = Buffer.from('ustar\u000000', 'latin1');

/**
 * Writes `header` as one ustar block at `offset` of `target` when ustar holds
 * all of it (no pax record needed), and says whether it did; when it did
 * not, nothing was written and {@link encodeTarHeader} is what the entry
 * needs. The bytes are encodeTarHeader's for such a header, made without
 * its strings, BigInt conversions and allocations: a layer of small files is
 * mostly headers, and encoding them cost more than reading the files.
 */
export function writeUstarHeader(header: TarHeader, target: Buffer, offset: number): boolean {
  const { mtimeNs, size, uid, gid } = header;
  if (header.xattrs !== undefined && header.xattrs.length > 0) return false;
  if (mtimeNs < 0n || mtimeNs % NS_PER_S !== 0n || mtimeNs / NS_PER_S >= MAX_OCTAL_11N || size >= MAX_OCTAL_11N) return false;
  const devmajor = header.devmajor ?? 0;
  const devminor = header.devminor ?? 0;
  if (!(uid >= 0 && uid < MAX_OCTAL_7 && gid >= 0 && gid < MAX_OCTAL_7 && devmajor < MAX_OCTAL_7 && devminor < MAX_OCTAL_7)) return false;
  const linkname = header.linkname ?? '';
  if (!fitsUstarText(linkname, 100)) return false;
  const split = splitUstarName(header.type === 'dir' ? `${header.name}/` : header.name);
  if (split === undefined) return false;
  const end = offset + BLOCK;
  // The typed array's own fill and set: Buffer's add checks that cost more than the 512 bytes.
  Uint8Array.prototype.fill.call(target, 0, offset, end);
  // All text here is printable ASCII (checked above): latin1 writes it byte for byte.
  target.write(split.name, offset, 100, 'latin1');
  putOctal(target, offset + 100, 8, header.mode & 0o7777);
  putOctal(target, offset + 108, 8, uid);
  putOctal(target, offset + 116, 8, gid);
  putOctal(target, offset + 124, 12, Number(size));
  putOctal(target, offset + 136, 12, Number(mtimeNs / NS_PER_S));
  target[offset + 156] = TYPEFLAG[header.type].charCodeAt(0);
  if (linkname !== '') target.write(linkname, offset + 157, 100, 'latin1');
  Uint8Array.prototype.set.call(target, USTAR_MAGIC, offset + 257);
  putOctal(target, offset + 329, 8, devmajor);
  putOctal(target, offset + 337, 8, devminor);
  if (split.prefix !== '') target.write(split.prefix, offset + 345, 155, 'latin1');
  // The checksum field counts as eight spaces; it is still zero here.
  let sum = 8 * 0x20;
  for (let i = offset; i < end; i++) sum += target[i] as number;
  putOctal(target, offset + 148, 7, sum);
  target[offset + 155] = 0x20;
  return true;
}

/** `value` (which fits) as `width - 1` zero-padded octal digits and a NUL, as {@link writeOctal} writes it. */
function putOctal(target: Buffer, offset: number, width: number, value: number): void {
  let rest = value;
  for (let i = offset + width - 2; i >= offset; i--) {
    target[i] = 0x30 + (rest % 8);
    rest = Math.floor(rest / 8);
  }
  target[offset + width - 1] = 0;
}

interface UstarFields {
  readonly name: { readonly prefix: string; readonly name: string };
  readonly typeflag: string;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: bigint;
  readonly mtime: bigint;
  readonly linkname: string;
  readonly devmajor: number;
  readonly devminor: number;
}

/** One 512-byte ustar header; numbers that do not fit are written as 0 (pax carries them). */
function ustarBlock(f: UstarFields): Buffer {
  const block = Buffer.alloc(BLOCK);
  block.write(f.name.name, 0, 100, 'utf8');
  writeOctal(block, 100, 8, BigInt(f.mode));
  writeOctal(block, 108, 8, BigInt(f.uid));
  writeOctal(block, 116, 8, BigInt(f.gid));
  writeOctal(block, 124, 12, f.size);
  writeOctal(block, 136, 12, f.mtime);
  block.write(f.typeflag, 156, 1, 'ascii');
  block.write(f.linkname, 157, 100, 'utf8');
  block.write('ustar\u000000', 257, 8, 'ascii');
  writeOctal(block, 329, 8, BigInt(f.devmajor));
  writeOctal(block, 337, 8, BigInt(f.devminor));
  block.write(f.name.prefix, 345, 155, 'utf8');
  // The checksum is computed with its own field read as eight spaces.
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 8, 'ascii');
  return block;
}

function fitsOctal(value: bigint, width: number): boolean {
  return value >= 0n && value.toString(8).length <= width - 1;
}

function writeOctal(block: Buffer, offset: number, width: number, value: bigint): void {
  const digits = fitsOctal(value, width) ? value.toString(8) : '0';
  block.write(`${digits.padStart(width - 1, '0')}\u0000`, offset, width, 'ascii');
}

/** Printable ASCII only: anything else goes into pax, where readers expect UTF-8. */
function fitsUstarText(s: string, max: number): boolean {
  return s.length <= max && /^[\x20-\x7e]*$/.test(s);
}

/** The ustar name/prefix split of `name`, or undefined when only pax can hold it. */
function splitUstarName(name: string): { prefix: string; name: string } | undefined {
  if (!fitsUstarText(name, 255)) return undefined;
  if (name.length <= 100) return { prefix: '', name };
  // The prefix ends at a slash; the slash itself is implied, not stored.
  for (let i = name.indexOf('/'); i !== -1; i = name.indexOf('/', i + 1)) {
    const prefix = name.slice(0, i);
    const rest = name.slice(i + 1);
    if (prefix.length > 155) return undefined;
    if (rest.length <= 100 && rest.length > 0) return { prefix, name: rest };
  }
  return undefined;
}

/** What old readers see when the real value is in pax: the same text, made ASCII and cut to fit. */
function asciiStandIn(s: string, max: number): string {
  return s.replace(/[^\x20-\x7e]/g, '_').slice(0, max);
}

/** `LEN key=value\n`, where LEN counts the whole record including its own digits. */
function paxRecord(key: string, value: Uint8Array): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`, 'utf8'), value, Buffer.from('\n')]);
  let length = body.length + 1;
  while (length !== body.length + String(length).length) length = body.length + String(length).length;
  return Buffer.concat([Buffer.from(String(length), 'ascii'), body]);
}

function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b;
  return a % b !== 0n && a < 0n ? q - 1n : q;
}

/** Seconds with nine decimals; pax writes times before the epoch with a leading minus. */
function paxTime(ns: bigint): string {
  const abs = ns < 0n ? -ns : ns;
  const fraction = (abs % NS_PER_S).toString().padStart(9, '0');
  return `${ns < 0n ? '-' : ''}${abs / NS_PER_S}.${fraction}`;
}

/** GNU tar's keyword escaping: `=` ends a keyword and `%` starts an escape. */
function escapeXattrName(name: string): string {
  return name.replace(/%/g, '%25').replace(/=/g, '%3D');
}
