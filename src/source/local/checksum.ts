/**
 * The content checksum of a local source: what its cache key is made of.
 *
 * It covers, for each selected entry in sorted order, the relative path, the
 * type, the permission bits, the owner and the symlink target or content hash,
 * and nothing else: mtimes are left out so that touching a file without
 * changing it keeps the cache.
 *
 * Reading a 200 MB context on every build would cost more than the build, so
 * content hashes are kept in an index keyed by each file's stat identity
 * (dev, inode, size, mtime, ctime, mode). A file whose identity is unchanged
 * is not read again. ctime is what makes this safe: no user-space call can
 * set it, and every write moves it.
 */
import { createHash } from 'node:crypto';
import { constants as fsConstants, readlinkSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { type Digest, digestOf, sha256 } from '../../digest.js';
import { KilnError } from '../../errors.js';
import { beginTreeListing, type EarlySelection, type ListedEntry, type ListedStats, takeTreeListing, type TreeListing, treeListing } from '../../fs/tree-stamp.js';
import { literalPaths } from '../../fs/patterns.js';
import type { Definition } from '../../llb/types.js';
import type { TreeEntry } from '../../fs/walk.js';
import { filteredEntryBatches, type LocalSourceLabel, localSourceError, patternSelectionFilter, selectionFilter } from './selected-entries.js';
import { importLine, type LocalImportMemory, RACY_MARK, statKey } from './incremental.js';
import { type LocalSelection, parseLocalSelection } from './selection.js';
import { TaskPool } from './task-pool.js';

/**
 * Begins, as a build starts, the tree listing of each local directory of
 * `definition` (see fs/tree-stamp.ts's beginTreeListing): its find then runs
 * while the process starts, and the checksum takes it. A source with include
 * or exclude patterns has the walk its filter prunes begun, the one its
 * checksum would begin; one with followed paths begins its own, once their
 * links are read.
 */
export function beginLocalListings(definition: Definition, locals: Readonly<Record<string, string>>): void {
  for (const op of definition.ops.values()) {
    if (op.body.kind !== 'source' || !op.body.source.identifier.startsWith(LOCAL_PREFIX)) continue;
    const dir = locals[op.body.source.identifier.slice(LOCAL_PREFIX.length)];
    const early = dir === undefined ? undefined : earlySelection(op.body.source.attrs);
    if (dir !== undefined && early !== undefined) beginTreeListing(dir, early === 'whole' ? undefined : early);
  }
}

const LOCAL_PREFIX = 'local://';

/** The plain paths a selection of only such include patterns names (see fs/tree-stamp.ts's TreeStampOptions.literal). */
function literalSelection(selection: LocalSelection): string[] | undefined {
  return selection.exclude.length === 0 && selection.followPaths.length === 0 ? literalPaths(selection.include) : undefined;
}

/**
 * What of a local source's directory can be listed before its checksum
 * begins: all of it, what its patterns' filter may take, or nothing (followed
 * paths; a malformed selection, which is the source's to report, later).
 */
function earlySelection(attrs: Readonly<Record<string, string>>): 'whole' | EarlySelection | undefined {
  try {
    const selection = parseLocalSelection(attrs);
    if (selection.followPaths.length > 0) return undefined;
    const filter = patternSelectionFilter(selection);
    const literal = literalSelection(selection);
    return filter === undefined ? 'whole' : { key: digestOf(selection), filter, ...(literal === undefined ? {} : { literal }) };
  } catch {
    return undefined;
  }
}

/**
 * The content hashes of one directory under one selection, as one string:
 * for each indexed file in walk order, its path, its stat identity
 * (`dev:ino:size:mtimeNs:ctimeNs:mode`) and the sha256 (hex) of its content,
 * each followed by a NUL (which no path holds). One string rather than a
 * record per file: a store decodes it in one step, and an unchanged tree is
 * matched against it front to back without building a map.
 */
export type LocalHashIndex = string;

/** The records of an index, as `[path, identity, sha256]` (for tests and `du`). */
export function indexRecords(index: LocalHashIndex): (readonly [rel: string, identity: string, sha256: string])[] {
  const parts = index.split('\0');
  const records: [string, string, string][] = [];
  for (let i = 0; i + 2 < parts.length; i += 3) records.push([parts[i]!, parts[i + 1]!, parts[i + 2]!]);
  return records;
}

/**
 * Reads an index while the walk goes on: in an unchanged tree each file is
 * the next record, so a lookup is one comparison at the cursor; the first
 * miss turns the rest into a map.
 */
class IndexReader {
  readonly #index: string;
  #pos = 0;
  #map: Map<string, string> | undefined;
  /** Records read (known once the reader has fallen back to the map, or reached the end). */
  count = 0;

  constructor(index: string) {
    this.#index = index;
  }

  /** The content hash recorded for `prefix` (`rel\0identity\0`), if the index has it. */
  find(prefix: string, rel: string): string | undefined {
    if (this.#map === undefined) {
      if (this.#index.startsWith(prefix, this.#pos)) {
        const start = this.#pos + prefix.length;
        const end = this.#index.indexOf('\0', start);
        this.#pos = end + 1;
        this.count++;
        return this.#index.slice(start, end);
      }
      // The same path with another identity: a file written since, still in
      // order. Its record is passed over, so that one changed file in a big
      // tree does not turn every later lookup into a map's.
      if (this.#index.startsWith(rel, this.#pos) && this.#index.charCodeAt(this.#pos + rel.length) === 0) {
        const identityEnd = this.#index.indexOf('\0', this.#pos + rel.length + 1);
        const end = identityEnd < 0 ? -1 : this.#index.indexOf('\0', identityEnd + 1);
        if (end >= 0) {
          this.#pos = end + 1;
          this.count++;
          return undefined;
        }
      }
      this.#map = new Map();
      for (const [path, identity, sha] of indexRecords(this.#index)) this.#map.set(`${path}\0${identity}\0`, sha);
      this.count = this.#map.size;
    }
    return this.#map.get(prefix);
  }

  /** Whether every record was matched in order (nothing deleted, renamed or left unread). */
  get consumedInOrder(): boolean {
    return this.#map === undefined && this.#pos === this.#index.length;
  }
}

/**
 * The selected entries as a build remembers them to name what changed next
 * time: sorted `path\0signature\0` pairs in one string (a store writes and
 * reads it in one step), where the signature changes with what the checksum
 * covers (type, mode, owner, content or target). Null when the directory
 * has more than MAX_SIGNATURE_ENTRIES entries (not kept). Records of older
 * builds hold `[path, signature]` pairs, which are read as well.
 */
export type LocalFileSignature = string | readonly (readonly [path: string, signature: string])[] | null;

/** The `[path, signature]` pairs of a file list, in its order. */
export function signatureEntries(signature: NonNullable<LocalFileSignature>): (readonly [string, string])[] {
  if (typeof signature !== 'string') return [...signature];
  const parts = signature.split('\0');
  const pairs: [string, string][] = [];
  for (let i = 0; i + 1 < parts.length; i += 2) pairs.push([parts[i]!, parts[i + 1]!]);
  return pairs;
}

/** Entries beyond which a local source's file list is not kept (its reason then says only that files changed). */
export const MAX_SIGNATURE_ENTRIES = 20_000;

/**
 * The last checksum of a directory under a selection and the stamp of its
 * tree then (see fs/tree-stamp.ts): while the stamp is the same, so is the
 * checksum, and nothing needs walking in this process.
 */
export interface LocalTreeStamp {
  readonly stamp: string;
  readonly digest: Digest;
  readonly files: number;
  /** The files' total size, in decimal. */
  readonly bytes: string;
}

/**
 * Where the index of each directory is kept between builds (kiln backs it
 * with its metadata store), and, when it can, what each source's last import
 * copied (see incremental.ts) and its last tree stamp.
 */
export interface FileHashCache extends Partial<LocalImportMemory> {
  /** `key` names the directory and the selection; see {@link checksumLocal}. */
  get(key: string): LocalHashIndex | undefined;
  put(key: string, index: LocalHashIndex): Promise<void>;
  getStamp?: ((key: string) => LocalTreeStamp | undefined) | undefined;
  putStamp?: ((key: string, stamp: LocalTreeStamp) => void) | undefined;
}

/** Options of {@link checksumLocal}. */
export interface ChecksumLocalOptions extends LocalSourceLabel {
  /** Keeps content hashes between calls; without it every file is read. */
  readonly hashCache?: FileHashCache;
  readonly signal?: AbortSignal;
  /**
   * Files done so far, and the total once the directory has been listed;
   * then the bytes of those files, and their total once listed. Throttled.
   */
  readonly onProgress?: (done: number, total?: number, bytes?: HashedBytes) => void;
}

/** Bytes of the regular files checked so far (read, or known from the index), and of all of them once listed. */
export interface HashedBytes {
  readonly done: number;
  readonly total?: number;
}

/** The checksum of a local directory under a selection. */
export interface LocalChecksum {
  readonly digest: Digest;
  /** Regular files selected. */
  readonly files: number;
  /** Their total size. */
  readonly bytes: bigint;
  /** Files whose content was read this time (the rest came from the index). */
  readonly hashed: number;
  /** The entries as an import records them (see incremental.ts), taken from this walk; undefined when nothing was walked (the tree's stamp matched). */
  readonly importLog: (() => string) | undefined;
  /** What each entry was, to name the paths that change by the next build (worked out on the first call); undefined when nothing was walked. */
  readonly fileSignature: () => LocalFileSignature | undefined;
}

/** One entry's line of the digest (see {@link entryLine}). */
type EntryLine = string;

/** An entry the checksum covers: from this process's walk, or from the listing that took the tree's stamp. */
type CheckedEntry = TreeEntry | ListedEntry;

/** Entries listed at once, handed over in batches with a turn of the event loop between them, as a walk does. */
async function* inBatches(entries: readonly ListedEntry[]): AsyncGenerator<readonly ListedEntry[]> {
  for (let i = 0; i < entries.length; i += LISTED_BATCH) {
    if (i > 0) await new Promise<void>((resolve) => setImmediate(resolve));
    yield entries.slice(i, i + LISTED_BATCH);
  }
}

const LISTED_BATCH = 2048;

/** Files read at once: enough to keep a disk busy, few enough not to exhaust descriptors. */
const HASH_CONCURRENCY = 8;

/**
 * A change made this close to (or after) the start of a run can leave a file
 * with the same ctime it had when we hashed it, because file timestamps come
 * from a clock that ticks only every few milliseconds. Such files are hashed
 * but not indexed, and the next run hashes them again.
 */
const RACY_WINDOW_NS = 100_000_000n;

const PROGRESS_INTERVAL_MS = 100;

/** Bumped whenever what the digest covers changes, so old keys cannot match. */
const CHECKSUM_VERSION = 'kiln-local-checksum-v1';

/**
 * Computes the content checksum of the entries of `dir` that `selection` takes.
 * The index in `hashCache` is stored under a key naming the directory and the
 * selection, so sources that take different parts of one directory do not
 * overwrite each other's index.
 */
export async function checksumLocal(dir: string, selection: LocalSelection, options: ChecksumLocalOptions = {}): Promise<LocalChecksum> {
  const { hashCache, signal } = options;
  const selectionKey = digestOf(selection);
  const indexKey = `${CHECKSUM_VERSION} ${selectionKey} ${dir}`;
  // Before the stamp is taken: an entry changed since then is racy, and a stamp with one is not kept.
  let startedNs = BigInt(Date.now()) * 1_000_000n;
  const filter = await selectionFilter(dir, selection, options);
  // A listing the CLI began as it started, if any: of the whole tree, or
  // under the filter of this same selection (see beginLocalListings).
  const begun = takeTreeListing(dir, filter === undefined ? undefined : selectionKey);
  const progress = throttle(options.onProgress);
  let stamping: Promise<TreeListing | undefined> | undefined;
  if (hashCache?.getStamp !== undefined) {
    if (begun !== undefined) {
      stamping = begun.listing;
      startedNs = begun.startedNs;
    } else {
      // The stamp's walk runs in a child, beside this process's own walk when that is needed.
      const literal = literalSelection(selection);
      stamping = treeListing(dir, { ...(filter === undefined ? {} : { filter }), ...(literal === undefined ? {} : { literal }), ...(signal === undefined ? {} : { signal }) });
    }
  }
  const racyAfterNs = startedNs - RACY_WINDOW_NS;
  const last = hashCache?.getStamp?.(indexKey);
  // When there was a stamp, the listing that took the new one is awaited first; if it differs, its entries are the walk.
  const listing = stamping !== undefined && last !== undefined ? await stamping : undefined;
  if (listing !== undefined && listing.stamp === last?.stamp) {
    signal?.throwIfAborted();
    const bytes = Number(last.bytes);
    progress(last.files, last.files, { done: bytes, total: bytes }, true);
    return { digest: last.digest, files: last.files, bytes: BigInt(last.bytes), hashed: 0, importLog: undefined, fileSignature: () => undefined };
  }
  const listed = listing?.entries();
  const known = new IndexReader(hashCache?.get(indexKey) ?? '');
  // Entries changed too close to the start for their stat to tell a later change (see RACY_WINDOW_NS).
  let racy = 0;
  const pool = new TaskPool<EntryLine>(HASH_CONCURRENCY);
  // The new index's records, in walk order (a file being hashed keeps its place).
  const index: string[] = [];
  let files = 0;
  let bytes = 0n;
  let hashed = 0;
  let done = 0;
  let doneBytes = 0;
  let total: number | undefined;

  const counted = (entry: CheckedEntry): void => {
    doneBytes += Number(entry.stats.size);
    // The bytes object is made only when a report is due: this runs once per file.
    if (progress.due()) progress(++done, total, { done: doneBytes, ...(total === undefined ? {} : { total: Number(bytes) }) });
    else done++;
  };
  // The digest's line of a file; a promise only when its content must be read.
  const fileLine = (entry: CheckedEntry): EntryLine | Promise<EntryLine> => {
    const identity = statKey(entry.stats);
    const prefix = `${entry.rel}\0${identity}\0`;
    const indexable = entry.stats.ctimeNs < racyAfterNs;
    if (!indexable) racy++;
    importLog.push(indexable ? prefix : `${entry.rel}\0${identity}${RACY_MARK}\0`);
    const sha = known.find(prefix, entry.rel);
    if (sha !== undefined) {
      if (indexable) index.push(`${prefix}${sha}\0`);
      counted(entry);
      payloads.push(sha);
      return entryLine(entry, 'file', sha);
    }
    // Its record goes in its place in walk order once the content is read.
    const slot = indexable ? index.push('') - 1 : -1;
    const payloadSlot = payloads.push('') - 1;
    return pool.add(async () => {
      signal?.throwIfAborted();
      const fresh = await hashFile(dir, entry.path, Number(entry.stats.size), options);
      hashed++;
      if (slot >= 0) index[slot] = `${prefix}${fresh}\0`;
      payloads[payloadSlot] = fresh;
      counted(entry);
      return entryLine(entry, 'file', fresh);
    });
  };
  // What an import of these entries records (see incremental.ts): the file lines reuse the index's prefix.
  const importLog: string[] = [];
  // In walk order. An unchanged context is a walk and no promise per entry:
  // its lines come from the index right away.
  const lines: (EntryLine | Promise<EntryLine>)[] = [];
  // Beside each line, its entry, type and payload: a file list for rerun
  // reasons is then made from them, without parsing a line back.
  const walked: CheckedEntry[] = [];
  const types: string[] = [];
  const payloads: string[] = [];

  try {
    for await (const batch of listed === undefined ? filteredEntryBatches(dir, filter, options) : inBatches(listed)) {
      pool.throwIfFailed();
      for (const entry of batch) {
        // Not copied either (see copyEntry): a socket means something only to a live process.
        if (entry.stats.isSocket()) continue;
        if (entry.stats.isFile()) {
          files++;
          bytes += entry.stats.size;
          walked.push(entry);
          types.push('file');
          lines.push(fileLine(entry));
        } else {
          const [type, payload] = otherFacts(entry);
          walked.push(entry);
          types.push(type);
          payloads.push(payload);
          lines.push(entryLine(entry, type, payload));
          if (entry.stats.ctimeNs >= racyAfterNs) racy++;
          importLog.push(importLine(entry.rel, entry.stats, racyAfterNs));
        }
      }
    }
    total = files;
    await pool.drain();
    const settled: EntryLine[] = [];
    for (const line of lines) settled.push(typeof line === 'string' ? line : await line);
    const hash = createHash('sha256').update(`${CHECKSUM_VERSION}\n`);
    // A few large updates: one native call per line costs more than the hashing.
    for (let i = 0; i < settled.length; i += 1024) hash.update(settled.slice(i, i + 1024).join(''));
    progress(done, total, { done: doneBytes, total: Number(bytes) }, true);
    if (hashCache !== undefined && (hashed > 0 || !known.consumedInOrder || index.length !== known.count)) {
      await hashCache.put(indexKey, index.join(''));
    }
    const digest = `sha256:${hash.digest('hex')}` as Digest;
    // Kept only when no entry is racy: a change within the same clock tick could leave the stamp as it is.
    const stamp = racy === 0 ? (await stamping)?.stamp : undefined;
    if (stamp !== undefined) hashCache?.putStamp?.(indexKey, { stamp, digest, files, bytes: String(bytes) });
    // Worked out only when asked for (when the key changed): an unchanged context never needs it.
    let signature: LocalFileSignature | undefined;
    const fileSignature = (): LocalFileSignature => (signature ??= settled.length > MAX_SIGNATURE_ENTRIES ? null : signatureOf(walked, types, payloads));
    return { digest, files, bytes, hashed, fileSignature, importLog: () => importLog.join('') };
  } catch (err) {
    await pool.abandon(err);
    if (signal?.aborted === true) throw signal.reason;
    if (err instanceof KilnError) throw err;
    throw localSourceError(dir, options, (err as Error).message, err);
  }
}


/**
 * What the digest records of one entry: `[path, type, mode, uid, gid,
 * payload]` as JSON (which keeps any byte of a name unambiguous), one line.
 * Written out by hand: JSON.stringify of the array gives the same text but
 * costs an array per entry.
 */
function entryLine(entry: CheckedEntry, type: string, payload: string): EntryLine {
  const s = entry.stats;
  return `[${JSON.stringify(entry.rel)},"${type}",${s.mode & 0o7777n},${s.uid},${s.gid},${JSON.stringify(payload)}]\n`;
}

/**
 * The file list of the walked entries (see {@link LocalFileSignature}): each
 * entry's path and signature, the facts of its digest line with a long
 * payload (a content hash, a long symlink target) cut to a short hash.
 */
function signatureOf(entries: readonly CheckedEntry[], types: readonly string[], payloads: readonly string[]): string {
  const parts: string[] = [];
  for (let i = 0; i < entries.length; i++) {
    const { rel, stats: s } = entries[i]!;
    const payload = payloads[i]!;
    const short = payload.length <= 16 ? payload : /^[0-9a-f]{64}$/.test(payload) ? payload.slice(0, 16) : sha256(payload).slice(7, 23);
    parts.push(`${rel}\0${types[i]!}:${s.mode & 0o7777n}:${s.uid}:${s.gid}:${short}\0`);
  }
  return parts.join('');
}

/** The type and payload of an entry other than a regular file: a symlink's target, a device's number. */
function otherFacts(entry: CheckedEntry): readonly [type: string, payload: string] {
  const s = entry.stats;
  if (s.isSymbolicLink()) return ['symlink', 'target' in entry ? entry.target : readlinkSync(entry.path)];
  return [typeOf(s), s.isCharacterDevice() || s.isBlockDevice() ? String(s.rdev) : ''];
}

function typeOf(s: ListedStats): string {
  if (s.isFile()) return 'file';
  if (s.isDirectory()) return 'dir';
  if (s.isSymbolicLink()) return 'symlink';
  if (s.isCharacterDevice()) return 'char';
  if (s.isBlockDevice()) return 'block';
  return 'fifo';
}

/**
 * Files up to this size are read whole with one read call, not through a
 * stream: for a context of small files the stream's own machinery (its
 * state, its extra read for the end of file, its destroy) cost more than
 * the reads.
 */
const WHOLE_READ_MAX = 64 * 1024;

/** sha256 (hex) of a file's content; `size` (from the listing) picks one read or a stream, so no big file is held in memory. */
async function hashFile(dir: string, file: string, size: number, options: ChecksumLocalOptions): Promise<string> {
  const hash = createHash('sha256');
  try {
    // O_NOFOLLOW: a file swapped for a symlink since the listing must not pull in its target.
    const handle = await open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
    if (size <= WHOLE_READ_MAX) {
      try {
        // One byte more than listed, so that a file that grew since is still read to its end.
        const buffer = Buffer.allocUnsafe(size + 1);
        for (;;) {
          const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
          hash.update(buffer.subarray(0, bytesRead));
          // A regular file's short read is its end: no second read to see it.
          if (bytesRead < buffer.length) break;
        }
      } finally {
        await handle.close();
      }
    } else {
      // The stream closes the handle when it ends or fails.
      const stream = handle.createReadStream(options.signal === undefined ? {} : { signal: options.signal });
      for await (const chunk of stream as AsyncIterable<Buffer>) hash.update(chunk);
    }
  } catch (err) {
    if (options.signal?.aborted === true) throw options.signal.reason;
    throw localSourceError(dir, options, `cannot read ${file}: ${(err as Error).message}`, err);
  }
  return hash.digest('hex');
}

/** Calls `report` at most every PROGRESS_INTERVAL_MS, and always when `final`. */
function throttle(report: ChecksumLocalOptions['onProgress']): ((done: number, total: number | undefined, bytes: HashedBytes, final?: boolean) => void) & { due(): boolean } {
  let last = 0;
  // Date.now() at most every 64 calls of due(): files from the index go by at a few per microsecond.
  let calls = 0;
  const due = (): boolean => report !== undefined && (calls++ & 63) === 0 && Date.now() - last >= PROGRESS_INTERVAL_MS;
  const emit = (done: number, total: number | undefined, bytes: HashedBytes, final = false): void => {
    if (report === undefined) return;
    const now = Date.now();
    if (!final && now - last < PROGRESS_INTERVAL_MS) return;
    last = now;
    report(done, total, bytes);
  };
  return Object.assign(emit, { due });
}
