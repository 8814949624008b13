/**
 * Filesystem entries as the bytes of a tar stream, in the order they are
 * given. Shared by the tar exporter (a whole tree) and layer export (a
 * layer's changes). The consumer's backpressure is respected and memory stays
 * bounded whatever the size of the tree: big files are streamed, and only a
 * few small files are held while read ahead.
 */
import type { BigIntStats } from 'node:fs';
import { constants as fsConstants } from 'node:fs';
import { open, readlink } from 'node:fs/promises';
import { getAttribute, listAttributes } from 'fs-xattr';
import { ERROR_CODES, KilnError } from '../errors.js';
import { deviceNumbers, shouldCopyXattr } from './metadata.js';
import { bodyPadding, encodeTarHeader, END_OF_ARCHIVE, type TarHeader } from './tar-header.js';

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
}

/**
 * Entries being prepared ahead of the one being written. An archive is
 * written one entry at a time, so without this every file would wait for a
 * few round trips to the thread pool (xattrs, open, read, close) before its
 * bytes could flow, which is most of the time on a tree of small files.
 */
const READ_AHEAD = 16;

const NS_PER_S = 1_000_000_000n;

/** Files up to this size are read whole while ahead; bigger ones are streamed when their turn comes. */
const SMALL_FILE = 64 * 1024;

/** An entry ready to be written: its header, and its body if it is a small file. */
interface PreparedEntry {
  readonly path: string | undefined;
  readonly header: TarHeader;
  readonly body?: Buffer;
}

/**
 * The archive's bytes: each item's headers, then its body, then the end
 * marker. A further name of a file already archived (same dev:ino) becomes a
 * hardlink entry to its first name; a socket is left out (tar cannot hold one).
 */
export async function* tarChunks(items: AsyncIterable<ArchiveItem> | Iterable<ArchiveItem>, options: TarChunksOptions = {}): AsyncGenerator<Buffer> {
  const { signal, maxMtimeNs, wholeSecondMtimes = false } = options;
  // dev:ino of each file with several links, to the first of its names archived.
  const firstNames = new Map<string, string>();
  const ahead: Promise<PreparedEntry | undefined>[] = [];
  const next = async function* (): AsyncGenerator<Buffer> {
    const entry = await ahead.shift();
    if (entry === undefined) return;
    const { header, body } = entry;
    // A made-up header has no body (its size is 0 by its type).
    if (header.type !== 'file' || header.size === 0n || entry.path === undefined) {
      yield encodeTarHeader(header);
    } else if (body !== undefined) {
      // One write per small file rather than three.
      yield Buffer.concat([encodeTarHeader(header), body, bodyPadding(header.size)]);
    } else {
      yield encodeTarHeader(header);
      yield* fileBody(entry.path, header.size, signal);
      yield bodyPadding(header.size);
    }
  };
  for await (const item of items) {
    signal?.throwIfAborted();
    const prepared = 'header' in item ? Promise.resolve({ path: undefined, header: item.header }) : prepare(item, hardlinkTarget(item, firstNames), { maxMtimeNs, wholeSecondMtimes });
    // Observed now, awaited in turn: a failure must not count as unhandled meanwhile.
    prepared.catch(() => {});
    ahead.push(prepared);
    if (ahead.length >= READ_AHEAD) yield* next();
  }
  while (ahead.length > 0) yield* next();
  yield END_OF_ARCHIVE;
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

/** The entry's header (undefined for a socket), and a small file's body. */
async function prepare(
  { path: file, rel, stats }: HostItem,
  hardlinkTo: string | undefined,
  times: { readonly maxMtimeNs: bigint | undefined; readonly wholeSecondMtimes: boolean },
): Promise<PreparedEntry | undefined> {
  const { maxMtimeNs } = times;
  const mtimeNs = maxMtimeNs !== undefined && stats.mtimeNs > maxMtimeNs ? maxMtimeNs : stats.mtimeNs;
  const common = {
    name: rel,
    mode: Number(stats.mode & 0o7777n),
    uid: Number(stats.uid),
    gid: Number(stats.gid),
    size: 0n,
    mtimeNs: times.wholeSecondMtimes ? mtimeNs - (((mtimeNs % NS_PER_S) + NS_PER_S) % NS_PER_S) : mtimeNs,
  };
  // No xattrs for a symlink: fs-xattr would read its target's.
  if (stats.isSymbolicLink()) return { path: file, header: { ...common, type: 'symlink', linkname: await readlink(file) } };
  if (stats.isSocket()) return undefined;
  const xattrs = await readXattrs(file);
  const base = xattrs.length === 0 ? common : { ...common, xattrs };
  let header: TarHeader;
  if (hardlinkTo !== undefined) header = { ...base, type: 'hardlink', linkname: hardlinkTo };
  else if (stats.isDirectory()) header = { ...base, type: 'dir' };
  else if (stats.isFile()) header = { ...base, type: 'file', size: stats.size };
  else if (stats.isFIFO()) header = { ...base, type: 'fifo' };
  else header = { ...base, type: stats.isCharacterDevice() ? 'char' : 'block', ...tarDeviceNumbers(stats.rdev) };
  if (header.type !== 'file' || header.size === 0n || header.size > BigInt(SMALL_FILE)) return { path: file, header };
  return { path: file, header, body: await smallFileBody(file, Number(header.size)) };
}

/**
 * The xattrs an archive carries, sorted by name. The same ones copyEntry
 * (fs/metadata.ts) copies: not overlayfs's own `trusted.overlay.*`
 * bookkeeping, nor the host's `security.selinux` label.
 */
async function readXattrs(file: string): Promise<[string, Buffer][]> {
  let names: string[];
  try {
    names = await listAttributes(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOTSUP') return [];
    throw err;
  }
  const kept = names.filter(shouldCopyXattr).sort();
  return Promise.all(kept.map(async (name): Promise<[string, Buffer]> => [name, await getAttribute(file, name)]));
}

/** A dev_t as the tar header's major and minor numbers. */
function tarDeviceNumbers(rdev: bigint): { devmajor: number; devminor: number } {
  const [major, minor] = deviceNumbers(rdev);
  return { devmajor: Number(major), devminor: Number(minor) };
}

// O_NOFOLLOW: a file swapped for a symlink after the listing must not pull in the link's target.
const READ_FLAGS = fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW;

/** A small file's `size` bytes, read with one call (a stream costs more than the read itself). */
async function smallFileBody(file: string, size: number): Promise<Buffer> {
  const handle = await open(file, READ_FLAGS);
  try {
    const body = Buffer.allocUnsafe(size);
    let read = 0;
    for (let n = -1; n !== 0 && read < size; read += n) n = (await handle.read(body, read, size - read, read)).bytesRead;
    if (read !== size) throw shrank(file, BigInt(size), BigInt(read));
    return body;
  } finally {
    await handle.close();
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
