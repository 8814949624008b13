/**
 * Layer export: a snapshot layer's changes as an OCI layer tar (gzipped or
 * not) in the content store. Streaming end to end: the changes are read and
 * framed as tar (fs/tar-entries.ts) and hashed for the diffID, gzipped in
 * blocks on zlib's thread pool (gzip-blocks.ts), and hashed and written by
 * the store, the three stages decoupled by small buffers so that reading,
 * compressing and writing overlap; no layer is ever held in memory.
 *
 * Deterministic: the same tree gives the same diffID and the same blob,
 * whatever the inode order or the time of export. Entries are sorted
 * (parents first), headers carry no atime, ctime, user or group names,
 * mtimes are whole seconds (so a pax record is written only for what the
 * ustar header cannot hold: long names, big ids or sizes, xattrs), a
 * file's further names are hardlink entries to its first, whiteouts are
 * fixed headers, and the gzip header has mtime 0 and the Unix OS byte. The
 * compressed bytes depend on the level and zlib's version, as every gzip
 * layer's do, but not on the number of cores.
 */
import { createHash } from 'node:crypto';
import { type BigIntStats, lstatSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { Digest } from '../../digest.js';
import { ERROR_CODES, KilnError } from '../../errors.js';
import { type ArchiveItem, tarChunkBatches } from '../../fs/tar-entries.js';
import { walkTree, walkTreeBatches } from '../../fs/walk.js';
import { xattrModule } from '../../fs/xattr.js';
import { compareTrees, withAncestors } from '../../snapshot/tree-compare.js';
import type { BlobInfo, ContentStore } from '../store.js';
import { MEDIA_TYPES } from '../types.js';
import { gzipBlocks } from './gzip-blocks.js';

/**
 * One change of a layer, in the order the tar will hold them: sorted by
 * path, parents first, a directory's opaque marker right after it (see
 * {@link layerOrder}).
 */
export type LayerChange =
  /** An entry of the layer; `source` is the host path to read, and to lstat unless `stats` is its lstat already. */
  | { readonly kind: 'entry'; readonly path: string; readonly source: string; readonly stats?: BigIntStats }
  /** `path` was deleted from the layers below (written as `DIR/.wh.NAME`). */
  | { readonly kind: 'whiteout'; readonly path: string }
  /** The directory `path` hides everything the layers below had in it (`path/.wh..wh..opq`). */
  | { readonly kind: 'opaque'; readonly path: string };

/** Options of {@link exportLayer}. */
export interface ExportLayerOptions {
  readonly compression: 'gzip' | 'uncompressed';
  /** gzip level 0-9; default {@link DEFAULT_GZIP_LEVEL}. */
  readonly level?: number;
  /** Seconds since the epoch: every later mtime is written as this (SOURCE_DATE_EPOCH, rewrite-timestamp). */
  readonly sourceDateEpoch?: number;
  readonly signal?: AbortSignal;
  /** Called with each chunk of the blob before it is stored, awaited (a registry upload while the layer compresses). */
  readonly onChunk?: (chunk: Buffer) => Promise<void>;
}

/** An exported layer. */
export interface ExportedLayer {
  /** sha256 of the uncompressed tar. */
  readonly diffID: Digest;
  /** The stored blob (the gzipped tar, or the tar itself). */
  readonly blob: BlobInfo;
  /** The OCI layer media type of the blob. */
  readonly mediaType: string;
}

/** gzip's own default, and what `gzip` and BuildKit use unless told otherwise. */
export const DEFAULT_GZIP_LEVEL = 6;

/**
 * The tar order of two changes: path components compared by their UTF-8
 * bytes (parents before children), and an opaque marker after its
 * directory's own entry.
 */
export function layerOrder(a: LayerChange, b: LayerChange): number {
  // Code units below the surrogates order as UTF-8 bytes do: no Buffer per comparison.
  if (!NOT_BYTE_ORDERED.test(a.path) && !NOT_BYTE_ORDERED.test(b.path)) return codeUnitOrder(a, b);
  const pa = a.path.split('/');
  const pb = b.path.split('/');
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    const order = Buffer.compare(Buffer.from(pa[i] as string), Buffer.from(pb[i] as string));
    if (order !== 0) return order;
  }
  return pa.length - pb.length || Number(a.kind === 'opaque') - Number(b.kind === 'opaque');
}

/** Names with a code unit from U+D800 up, whose UTF-16 order is not their UTF-8 byte order. */
const NOT_BYTE_ORDERED = /[\uD800-\uFFFF]/;

/** {@link layerOrder} for paths whose code-unit order is their byte order. */
function codeUnitOrder(a: LayerChange, b: LayerChange): number {
  const x = a.path;
  const y = b.path;
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) {
    const p = x.charCodeAt(i);
    const q = y.charCodeAt(i);
    if (p === q) continue;
    // The end of a component ('/') comes before any other byte of a longer one.
    if (p === 0x2f) return -1;
    if (q === 0x2f) return 1;
    return p - q;
  }
  return x.length - y.length || Number(a.kind === 'opaque') - Number(b.kind === 'opaque');
}

/**
 * The changes an overlayfs layer directory (an upper) holds: its entries,
 * with 0/0 character devices read as whiteouts and directories with
 * `trusted.overlay.opaque=y` as opaque.
 *
 * @throws KilnError E_LAYER for a directory overlayfs recorded as renamed
 * (`trusted.overlay.redirect`): its content lives in the layers below, so
 * the layer must be exported by comparing trees instead.
 */
export async function overlayLayerChanges(layerDir: string): Promise<readonly LayerChange[]> {
  const { getAttribute, listAttributes } = await xattrModule();
  const changes: LayerChange[] = [];
  for await (const { rel, path: source, stats } of walkTree(layerDir)) {
    if (stats.isCharacterDevice() && stats.rdev === 0n) {
      changes.push({ kind: 'whiteout', path: rel });
      continue;
    }
    changes.push({ kind: 'entry', path: rel, source, stats });
    if (!stats.isDirectory()) continue;
    const attrs = await listAttributes(source);
    if (attrs.includes('trusted.overlay.redirect')) {
      throw new KilnError(ERROR_CODES.LAYER, `${source} is a directory overlayfs moved (trusted.overlay.redirect); its layer cannot be exported from the upper directory alone`);
    }
    if (attrs.includes('trusted.overlay.opaque') && (await getAttribute(source, 'trusted.overlay.opaque')).toString() === 'y') {
      changes.push({ kind: 'opaque', path: rel });
    }
  }
  return changes.sort(layerOrder);
}

/**
 * The changes that turn `lower` (undefined: an empty tree) into `upper`, by
 * comparing the trees (the native snapshotter's way): what is new or
 * changed, with its parent directories, and a whiteout for what is gone.
 */
export async function comparedLayerChanges(lower: string | undefined, upper: string): Promise<readonly LayerChange[]> {
  if (lower === undefined) {
    const changes: LayerChange[] = [];
    for await (const batch of treeLayerChanges(upper)) changes.push(...batch);
    return changes;
  }
  const { changed, deleted } = await compareTrees(lower, upper);
  const parentsOfDeleted = deleted.map((rel) => path.posix.dirname(rel)).filter((dir) => dir !== '.');
  const entries = withAncestors([...changed, ...parentsOfDeleted]).map((rel): LayerChange => ({ kind: 'entry', path: rel, source: path.join(upper, rel) }));
  const whiteouts = deleted.map((rel): LayerChange => ({ kind: 'whiteout', path: rel }));
  return [...entries, ...whiteouts].sort(layerOrder);
}

/**
 * The changes of a layer with no lower (everything in `tree` is new), as
 * the walk finds them, in batches: the walk's order is the tar's, and its
 * lstat is the archive's. Handed to {@link exportLayer} as they come, the
 * entries are framed while the walk goes on and none is kept after it is
 * written (a list of a whole tree's lstats kept the garbage collector busy).
 */
export async function* treeLayerChanges(tree: string): AsyncGenerator<readonly LayerChange[]> {
  for await (const batch of walkTreeBatches(tree)) {
    yield batch.map(({ rel, path: source, stats }): LayerChange => ({ kind: 'entry', path: rel, source, stats }));
  }
}

/** What {@link exportLayer} takes: changes one by one, or in batches (as {@link treeLayerChanges} gives them). */
export type LayerChanges = Iterable<LayerChange> | AsyncIterable<LayerChange | readonly LayerChange[]>;

/**
 * Writes the changes (in {@link layerOrder}) as a layer tar into the content
 * store: gzipped at `level` unless `compression` is `uncompressed`.
 *
 * @throws KilnError E_LAYER when a source cannot be read or the level is not 0-9.
 * @throws the signal's reason when `options.signal` aborts.
 */
export async function exportLayer(
  changes: LayerChanges,
  store: ContentStore,
  options: ExportLayerOptions,
): Promise<ExportedLayer> {
  const { compression, signal } = options;
  const level = options.level ?? DEFAULT_GZIP_LEVEL;
  if (compression === 'gzip' && !(Number.isInteger(level) && level >= 0 && level <= 9)) {
    throw new KilnError(ERROR_CODES.LAYER, `gzip compression level must be an integer from 0 to 9, not ${level}`);
  }
  const diff = createHash('sha256');
  const maxMtimeNs = options.sourceDateEpoch === undefined ? undefined : BigInt(Math.floor(options.sourceDateEpoch)) * 1_000_000_000n;
  // Whole-second mtimes: no pax record for every entry; of the xattrs only security.capability (see TarChunksOptions).
  const chunks = tarChunkBatches(archiveBatches(changes), {
    wholeSecondMtimes: true,
    xattrs: 'capability',
    ...(signal === undefined ? {} : { signal }),
    ...(maxMtimeNs === undefined ? {} : { maxMtimeNs }),
  });
  async function* tar(): AsyncGenerator<Buffer> {
    for await (const chunk of chunks) {
      diff.update(chunk);
      yield chunk;
    }
  }
  try {
    // Readable.from reads ahead of its consumer: the tar is framed while blocks compress, and compressed while the store writes.
    const body = compression === 'gzip' ? Readable.from(gzipBlocks(Readable.from(tar()), level)) : tar();
    const blob = await store.write(options.onChunk === undefined ? body : tee(body, options.onChunk), {}, signal);
    const mediaType = compression === 'gzip' ? MEDIA_TYPES.ociLayerGzip : MEDIA_TYPES.ociLayer;
    return { diffID: `sha256:${diff.digest('hex')}` as Digest, blob, mediaType };
  } catch (err) {
    if (signal?.aborted === true) throw signal.reason;
    if (err instanceof KilnError) throw err;
    throw new KilnError(ERROR_CODES.LAYER, `cannot export the layer: ${(err as Error).message}`, { cause: err });
  }
}

/** `chunks`, each handed to `onChunk` (and awaited) before it goes on. */
async function* tee(chunks: AsyncIterable<Buffer>, onChunk: (chunk: Buffer) => Promise<void>): AsyncGenerator<Buffer> {
  for await (const chunk of chunks) {
    await onChunk(chunk);
    yield chunk;
  }
}

/** The tar items of the changes, in batches: a list is one batch, framed without a promise per item. */
function archiveBatches(changes: LayerChanges): Iterable<Iterable<ArchiveItem>> | AsyncIterable<Iterable<ArchiveItem>> {
  if (Symbol.asyncIterator in changes) {
    return (async function* () {
      for await (const change of changes) yield isBatch(change) ? archiveItems(change) : [archiveItem(change)];
    })();
  }
  return [archiveItems(changes)];
}

function isBatch(change: LayerChange | readonly LayerChange[]): change is readonly LayerChange[] {
  return Array.isArray(change);
}

function* archiveItems(changes: Iterable<LayerChange>): Generator<ArchiveItem> {
  for (const change of changes) yield archiveItem(change);
}

/** The item of one change; its lstat is synchronous, a few microseconds where a thread-pool round trip costs several times that. */
function archiveItem(change: LayerChange): ArchiveItem {
  switch (change.kind) {
    case 'entry':
      return { rel: change.path, path: change.source, stats: change.stats ?? lstatSync(change.source, { bigint: true }) };
    case 'whiteout':
      return marker(path.posix.join(path.posix.dirname(change.path), `.wh.${path.posix.basename(change.path)}`));
    case 'opaque':
      return marker(path.posix.join(change.path, '.wh..wh..opq'));
  }
}

/** A whiteout file: empty, mode 0, owned by root, at the epoch (which no clamp changes), so only its name varies. */
function marker(name: string): ArchiveItem {
  return { header: { name, type: 'file', mode: 0, uid: 0, gid: 0, size: 0n, mtimeNs: 0n } };
}
