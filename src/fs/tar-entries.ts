/**
 * Filesystem entries as the bytes of a tar stream, in the order they are
 * given. Shared by the tar exporter (a whole tree) and layer export (a
 * layer's changes). The consumer's backpressure is respected and memory stays
 * bounded whatever the size of the tree: big files are streamed, and small
 * ones are read whole (with synchronous calls, which cost microseconds in
 * the page cache) and gathered into chunks of about {@link CHUNK_BYTES}.
 */
import type { BigIntStats } from 'node:fs';
import { closeSync, constants as fsConstants, openSync, readlinkSync, readSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { ERROR_CODES, KilnError } from '../errors.js';
import { deviceNumbers, shouldCopyXattr } from './metadata.js';
import { bodyPadding, encodeTarHeader, END_OF_ARCHIVE, type TarHeader, writeUstarHeader } from './tar-header.js';
import { xattrSync } from './xattr.js';

/**
 * One entry to archive: a host file described by its lstat (a walkTree
 * entry has this shape), or a header with no body that the caller made up
 * (a layer's whiteout markers).
 */
export type ArchiveItem =
  | { readonly rel: string; readonly path: string; readonly stats: BigIntStats }
  | { readonly header: TarHeader & { readonly size: 0n } };

/** Options of {@link tarChunks}. */
export interface TarChunksOptions {
  readonly signal?: AbortSignal;
  /** The latest mtime (ns) a host entry may carry; later ones are written as this (SOURCE_DATE_EPOCH). */
  readonly maxMtimeNs?: bigint;
  /**
   * Write mtimes in whole seconds (rounded down), which the ustar header
   * holds, instead of a pax record with the nanoseconds for every entry that
   * has them: such a record takes a 512-byte header and a 512-byte block, so
   * on a tree of small files it doubles the archive (GNU tar's default format
   * keeps whole seconds too).
   */
  readonly wholeSecondMtimes?: boolean;
  /**
   * Which xattrs to record: `all` (the default) but overlayfs's and SELinux's
   * own (see readXattrs), or `capability`: only `security.capability`, and
   * only on regular files with an execute bit, which is where the kernel
   * honours file capabilities. `capability` is what image layers record
   * (containerd's layer writer keeps no other xattr either), and it spares a
   * listxattr per entry: on a layer of small files that call was the
   * biggest single cost of the export.
   */
  readonly xattrs?: 'all' | 'capability';
}

/** How entries are framed: TarChunksOptions with its defaults applied. */
interface Framing {
  readonly maxMtimeNs: bigint | undefined;
  readonly wholeSecondMtimes: boolean;
  readonly capabilityOnly: boolean;
}

const NS_PER_S = 1_000_000_000n;

/** Shared by the entries with none, which are most. */
const NO_XATTRS: readonly [string, Buffer][] = [];

/** Files up to this size are read whole, with synchronous calls; bigger ones are streamed. */
const SMALL_FILE = 64 * 1024;
const SMALL_FILE_N = BigInt(SMALL_FILE);

/**
 * Bytes of headers and small files gathered into one chunk: a chunk per
 * entry would cost each small file a trip through every stage downstream
 * (hashing, compression, the store). Chunks end at multiples of this in the
 * stream (but around big files, which stream through on their own), which is
 * the block size of the layer's gzip (content/layer/gzip-blocks.ts): its
 * blocks are then the chunks themselves, not copies of them.
 */
export const CHUNK_BYTES = 512 * 1024;

/** An entry ready to be written: its header, and whether its body is read whole into the chunk. */
interface PreparedEntry {
  readonly path: string | undefined;
  readonly header: TarHeader;
  readonly small: boolean;
}

/**
 * Room of a chunk: {@link CHUNK_BYTES}, and then what one more entry may
 * need (a header, a small file's body, its padding) so that an entry is
 * always written whole; what passes the chunk's end starts the next one.
 */
const CHUNK_ROOM = CHUNK_BYTES + SMALL_FILE + 2 * 512;

/**
 * The archive's bytes: each item's headers, then its body, then the end
 * marker. A further name of a file already archived (same dev:ino) becomes a
 * hardlink entry to its first name; a socket is left out (tar cannot hold one).
 *
 * Headers that ustar holds are written straight into the chunk, and small
 * files are read straight into it behind them: no buffer per entry. Items
 * given as an array (or any synchronous iterable) are framed without a
 * promise per item.
 */
export function tarChunks(items: AsyncIterable<ArchiveItem> | Iterable<ArchiveItem>, options: TarChunksOptions = {}): AsyncGenerator<Buffer> {
  return tarChunkBatches(Symbol.asyncIterator in items ? oneByOne(items) : [items], options);
}

/** {@link tarChunks} of items in batches: each batch is framed with no promise per item. */
export async function* tarChunkBatches(
  batches: AsyncIterable<Iterable<ArchiveItem>> | Iterable<Iterable<ArchiveItem>>,
  options: TarChunksOptions = {},
): AsyncGenerator<Buffer> {
  const framer = new ChunkFramer(options);
  for await (const batch of batches) {
    for (const item of batch) {
      options.signal?.throwIfAborted();
      const big = framer.add(item);
      for (let full = framer.full(); full !== undefined; full = framer.full()) yield full;
      if (big === undefined) continue;
      // A big file streams through after its header.
      if (framer.used > 0) yield framer.take();
      yield* fileBody(big.path, big.size, options.signal);
      const padding = bodyPadding(big.size);
      yield padding;
      framer.skip(big.size + BigInt(padding.length));
    }
  }
  yield framer.end();
}

async function* oneByOne<T>(items: AsyncIterable<T>): AsyncGenerator<T[]> {
  for await (const item of items) yield [item];
}

/** A file whose body streams through on its own, after its header. */
interface BigFile {
  readonly path: string;
  readonly size: bigint;
}

/** The state of {@link tarChunks}: the chunk being filled, and where it starts in the stream. */
class ChunkFramer {
  private readonly framing: Framing;
  // dev:ino of each file with several links, to the first of its names archived.
  private readonly firstNames = new Map<string, string>();
  // Not zeroed: every byte up to `used` is written (headers whole, padding filled).
  private chunk = Buffer.allocUnsafeSlow(CHUNK_ROOM);
  used = 0;
  /** Bytes of the stream before the chunk. */
  private offset = 0;

  constructor(options: TarChunksOptions) {
    this.framing = { maxMtimeNs: options.maxMtimeNs, wholeSecondMtimes: options.wholeSecondMtimes ?? false, capabilityOnly: options.xattrs === 'capability' };
  }

  /** The chunk's bytes, all of them; a new chunk starts. */
  take(): Buffer {
    const full = this.chunk.subarray(0, this.used);
    this.offset += this.used;
    this.chunk = Buffer.allocUnsafeSlow(CHUNK_ROOM);
    this.used = 0;
    return full;
  }

  /** Bytes that went by outside the chunks (a big file's body). */
  skip(bytes: bigint): void {
    this.offset = (this.offset + Number(bytes % BigInt(CHUNK_BYTES))) % CHUNK_BYTES;
  }

  /**
   * The chunk up to the next multiple of CHUNK_BYTES in the stream, once it
   * reaches it (what is past it starts the next chunk); undefined before.
   */
  full(): Buffer | undefined {
    const end = CHUNK_BYTES - (this.offset % CHUNK_BYTES);
    if (this.used < end) return undefined;
    const full = this.chunk.subarray(0, end);
    const next = Buffer.allocUnsafeSlow(Math.max(CHUNK_ROOM, this.used - end + SMALL_FILE + 2 * 512));
    this.used = this.chunk.copy(next, 0, end, this.used);
    this.chunk = next;
    this.offset += end;
    return full;
  }

  /** Writes `item`'s header (and a small file's body) into the chunk; a big file's body is the caller's to stream. */
  add(item: ArchiveItem): BigFile | undefined {
    const entry = 'header' in item ? { path: undefined, header: item.header, small: false } : prepare(item, hardlinkTarget(item, this.firstNames), this.framing);
    if (entry === undefined) return undefined;
    const { header } = entry;
    if (writeUstarHeader(header, this.chunk, this.used)) {
      this.used += 512;
    } else {
      // With a pax header, of any size (xattrs): it goes into the chunk when it leaves room for the body, else through a chunk of its own.
      const encoded = encodeTarHeader(header);
      if (this.used + encoded.length + SMALL_FILE + 512 > this.chunk.length) this.grow(encoded.length);
      this.used += encoded.copy(this.chunk, this.used);
    }
    if (entry.small) {
      const size = Number(header.size);
      readSmallFile(entry.path as string, this.chunk, this.used, size);
      const padded = size + ((512 - (size % 512)) % 512);
      this.chunk.fill(0, this.used + size, this.used + padded);
      this.used += padded;
      return undefined;
    }
    if (header.type === 'file' && header.size > 0n && entry.path !== undefined) return { path: entry.path, size: header.size };
    return undefined;
  }

  /** Room for `bytes` more, and a small file's body after them. */
  private grow(bytes: number): void {
    const bigger = Buffer.allocUnsafeSlow(this.used + bytes + SMALL_FILE + 512 + CHUNK_ROOM);
    this.chunk.copy(bigger, 0, 0, this.used);
    this.chunk = bigger;
  }

  /** The last chunk, with the end-of-archive marker. */
  end(): Buffer {
    if (this.chunk.length < this.used + END_OF_ARCHIVE.length) this.grow(END_OF_ARCHIVE.length);
    this.used += END_OF_ARCHIVE.copy(this.chunk, this.used);
    return this.take();
  }
}

type HostItem = Extract<ArchiveItem, { readonly stats: BigIntStats }>;

/** The first archived name of the file at `item` when it is a further name of one already archived. */
function hardlinkTarget({ rel, stats }: HostItem, firstNames: Map<string, string>): string | undefined {
  if (stats.isDirectory() || stats.isSymbolicLink() || stats.nlink < 2n) return undefined;
  const inode = `${stats.dev}:${stats.ino}`;
  const first = firstNames.get(inode);
  if (first === undefined) firstNames.set(inode, rel);
  return first;
}

/** The entry's header (undefined for a socket), and whether it is a small file. */
function prepare(
  { path: file, rel, stats }: HostItem,
  hardlinkTo: string | undefined,
  framing: Framing,
): PreparedEntry | undefined {
  const { maxMtimeNs } = framing;
  const clamped = maxMtimeNs !== undefined && stats.mtimeNs > maxMtimeNs ? maxMtimeNs : stats.mtimeNs;
  const mtimeNs = framing.wholeSecondMtimes ? clamped - (((clamped % NS_PER_S) + NS_PER_S) % NS_PER_S) : clamped;
  const mode = Number(stats.mode & 0o7777n);
  const uid = Number(stats.uid);
  const gid = Number(stats.gid);
  // Each header made whole at once (no spreads): a layer of small files makes one per file.
  // No xattrs for a symlink: fs-xattr would read its target's.
  if (stats.isSymbolicLink()) return { path: file, header: { name: rel, type: 'symlink', mode, uid, gid, size: 0n, mtimeNs, linkname: readlinkSync(file) }, small: false };
  if (stats.isSocket()) return undefined;
  // Empty for most entries, which the header writers take as none.
  const xattrs = !framing.capabilityOnly ? readXattrs(file) : stats.isFile() && (mode & 0o111) !== 0 ? readCapability(file) : NO_XATTRS;
  let header: TarHeader;
  if (hardlinkTo !== undefined) header = { name: rel, type: 'hardlink', mode, uid, gid, size: 0n, mtimeNs, linkname: hardlinkTo, xattrs };
  else if (stats.isDirectory()) header = { name: rel, type: 'dir', mode, uid, gid, size: 0n, mtimeNs, xattrs };
  else if (stats.isFile()) header = { name: rel, type: 'file', mode, uid, gid, size: stats.size, mtimeNs, xattrs };
  else if (stats.isFIFO()) header = { name: rel, type: 'fifo', mode, uid, gid, size: 0n, mtimeNs, xattrs };
  else header = { name: rel, type: stats.isCharacterDevice() ? 'char' : 'block', mode, uid, gid, size: 0n, mtimeNs, xattrs, ...tarDeviceNumbers(stats.rdev) };
  return { path: file, header, small: header.type === 'file' && header.size > 0n && header.size <= SMALL_FILE_N };
}

/**
 * The xattrs an archive carries, sorted by name. The same ones copyEntry
 * (fs/metadata.ts) copies: not overlayfs's own `trusted.overlay.*`
 * bookkeeping, nor the host's `security.selinux` label.
 */
function readXattrs(file: string): [string, Buffer][] {
  let names: string[];
  try {
    names = xattrSync().listAttributesSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOTSUP') return [];
    throw err;
  }
  if (names.length === 0) return [];
  return names
    .filter(shouldCopyXattr)
    .sort()
    .map((name): [string, Buffer] => [name, xattrSync().getAttributeSync(file, name)]);
}

/**
 * The file's `security.capability`, if any: one getxattr, against a
 * listxattr (and a getxattr per name) for all of them.
 */
function readCapability(file: string): readonly [string, Buffer][] {
  try {
    return [['security.capability', xattrSync().getAttributeSync(file, 'security.capability')]];
  } catch (err) {
    const { code } = err as NodeJS.ErrnoException;
    if (code === 'ENODATA' || code === 'ENOTSUP') return NO_XATTRS;
    throw err;
  }
}

/** A dev_t as the tar header's major and minor numbers. */
function tarDeviceNumbers(rdev: bigint): { devmajor: number; devminor: number } {
  const [major, minor] = deviceNumbers(rdev);
  return { devmajor: Number(major), devminor: Number(minor) };
}

// O_NOFOLLOW: a file swapped for a symlink after the listing must not pull in the link's target.
const READ_FLAGS = fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW;

/**
 * A small file's `size` bytes, read into `target` at `offset` with
 * synchronous calls: open, read and close take microseconds each in the page
 * cache, where three round trips through the thread pool cost several times
 * that in the main thread alone.
 */
function readSmallFile(file: string, target: Buffer, offset: number, size: number): void {
  const fd = openSync(file, READ_FLAGS);
  try {
    let read = 0;
    for (let n = -1; n !== 0 && read < size; read += n) n = readSync(fd, target, offset + read, size - read, read);
    if (read !== size) throw shrank(file, BigInt(size), BigInt(read));
  } finally {
    closeSync(fd);
  }
}

/** Exactly `size` bytes of `file`, streamed; a file that shrank since it was listed fails the archive. */
async function* fileBody(file: string, size: bigint, signal: AbortSignal | undefined): AsyncGenerator<Buffer> {
  const handle = await open(file, READ_FLAGS);
  // The stream closes the handle, also when the consumer stops early.
  const stream = handle.createReadStream({ end: Number(size) - 1, ...(signal === undefined ? {} : { signal }) });
  let read = 0n;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    read += BigInt(chunk.length);
    yield chunk;
  }
  if (read !== size) throw shrank(file, size, read);
}

function shrank(file: string, size: bigint, read: bigint): KilnError {
  return new KilnError(ERROR_CODES.OUTPUT, `${file} shrank from ${size} to ${read} bytes while it was being archived`);
}
