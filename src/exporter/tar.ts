/**
 * The tar exporter: a directory as one tar stream, entries in sorted order so
 * the same tree always gives the same bytes. The consumer's backpressure is
 * respected and memory stays bounded whatever the size of the tree: big files
 * are streamed, and only a few small files are held while read ahead.
 */
import { constants as fsConstants } from 'node:fs';
import { open, readlink, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { getAttribute, listAttributes } from 'fs-xattr';
import { ERROR_CODES, KilnError } from '../errors.js';
import { type TreeEntry, walkTree } from '../fs/walk.js';
import { bodyPadding, encodeTarHeader, END_OF_ARCHIVE, type TarHeader } from './tar-header.js';
import { removeStaleStaging, stagingPath } from './staging.js';
import type { ExportOptions } from './types.js';

/**
 * Writes `srcDir` as a tar archive to `dest`.
 *
 * A path is written whole or not at all: the archive goes to a temporary file
 * next to it, is fsync'ed, then renamed over `dest`. A stream (stdout for
 * `dest=-`) receives the archive as it is produced and is ended after it.
 */
export async function exportTar(srcDir: string, dest: string | NodeJS.WritableStream, options: ExportOptions = {}): Promise<void> {
  const { signal } = options;
  const shown = typeof dest === 'string' ? dest : 'the output stream';
  try {
    const archive = Readable.from(tarChunks(srcDir, signal));
    if (typeof dest === 'string') await writeFileAtomically(path.resolve(dest), archive, signal);
    else await pipeline(archive, dest, signal === undefined ? {} : { signal });
  } catch (err) {
    if (signal?.aborted === true) throw signal.reason;
    if (err instanceof KilnError) throw err;
    throw new KilnError(ERROR_CODES.OUTPUT, `cannot write tar of ${srcDir} to ${shown}: ${(err as Error).message}`, { cause: err });
  }
}

async function writeFileAtomically(dest: string, archive: Readable, signal: AbortSignal | undefined): Promise<void> {
  await removeStaleStaging(dest);
  const tmp = stagingPath(dest, 'tmp');
  try {
    const handle = await open(tmp, 'wx', 0o666);
    // The stream closes the handle when it ends or fails.
    await pipeline(archive, handle.createWriteStream(), signal === undefined ? {} : { signal });
    const again = await open(tmp, 'r');
    try {
      await again.sync();
    } finally {
      await again.close();
    }
    await rename(tmp, dest);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/**
 * Entries being prepared ahead of the one being written. An archive is
 * written one entry at a time, so without this every file would wait for a
 * few round trips to the thread pool (xattrs, open, read, close) before its
 * bytes could flow, which is most of the time on a tree of small files.
 */
const READ_AHEAD = 16;

/** Files up to this size are read whole while ahead; bigger ones are streamed when their turn comes. */
const SMALL_FILE = 64 * 1024;

/** An entry ready to be written: its header, and its body if it is a small file. */
interface PreparedEntry {
  readonly path: string;
  readonly header: TarHeader;
  readonly body?: Buffer;
}

/** The archive's bytes: each entry's headers, then its body, then the end marker. */
async function* tarChunks(srcDir: string, signal: AbortSignal | undefined): AsyncGenerator<Buffer> {
  // dev:ino of each file with several links, to the first of its names archived.
  const firstNames = new Map<string, string>();
  const ahead: Promise<PreparedEntry | undefined>[] = [];
  const next = async function* (): AsyncGenerator<Buffer> {
    const entry = await ahead.shift();
    if (entry === undefined) return;
    const { header, body } = entry;
    if (header.type !== 'file' || header.size === 0n) {
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
  for await (const entry of walkTree(srcDir, signal === undefined ? {} : { signal })) {
    const prepared = prepare(entry, hardlinkTarget(entry, firstNames));
    // Observed now, awaited in turn: a failure must not count as unhandled meanwhile.
    prepared.catch(() => {});
    ahead.push(prepared);
    if (ahead.length >= READ_AHEAD) yield* next();
  }
  while (ahead.length > 0) yield* next();
  yield END_OF_ARCHIVE;
}

/** The first archived name of the file at `entry` when it is a further name of one already archived. */
function hardlinkTarget({ rel, stats }: TreeEntry, firstNames: Map<string, string>): string | undefined {
  if (stats.isDirectory() || stats.isSymbolicLink() || stats.nlink < 2n) return undefined;
  const inode = `${stats.dev}:${stats.ino}`;
  const first = firstNames.get(inode);
  if (first === undefined) firstNames.set(inode, rel);
  return first;
}

/** The entry's header (undefined for a socket, which tar cannot hold), and a small file's body. */
async function prepare({ path: file, rel, stats }: TreeEntry, hardlinkTo: string | undefined): Promise<PreparedEntry | undefined> {
  const common = {
    name: rel,
    mode: Number(stats.mode & 0o7777n),
    uid: Number(stats.uid),
    gid: Number(stats.gid),
    size: 0n,
    mtimeNs: stats.mtimeNs,
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
  else header = { ...base, type: stats.isCharacterDevice() ? 'char' : 'block', ...deviceNumbers(stats.rdev) };
  if (header.type !== 'file' || header.size === 0n || header.size > BigInt(SMALL_FILE)) return { path: file, header };
  const chunks: Buffer[] = [];
  for await (const chunk of fileBody(file, header.size, undefined)) chunks.push(chunk);
  return { path: file, header, body: Buffer.concat(chunks) };
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
  const kept = names.filter((name) => !name.startsWith('trusted.overlay.') && name !== 'security.selinux').sort();
  return Promise.all(kept.map(async (name): Promise<[string, Buffer]> => [name, await getAttribute(file, name)]));
}

/** Linux's split of a dev_t into major and minor (see makedev(3)). */
function deviceNumbers(rdev: bigint): { devmajor: number; devminor: number } {
  return {
    devmajor: Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn)),
    devminor: Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn)),
  };
}

/** Exactly `size` bytes of `file`; a file that shrank since it was listed fails the export. */
async function* fileBody(file: string, size: bigint, signal: AbortSignal | undefined): AsyncGenerator<Buffer> {
  // O_NOFOLLOW: a file swapped for a symlink after the listing must not pull in the link's target.
  const handle = await open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  // The stream closes the handle, also when the consumer stops early.
  const stream = handle.createReadStream({ end: Number(size) - 1, ...(signal === undefined ? {} : { signal }) });
  let read = 0n;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    read += BigInt(chunk.length);
    yield chunk;
  }
  if (read !== size) {
    throw new KilnError(ERROR_CODES.OUTPUT, `${file} shrank from ${size} to ${read} bytes while it was being archived`);
  }
}
