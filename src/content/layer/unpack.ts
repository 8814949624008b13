/**
 * Applying an image layer (a tar, maybe gzipped) onto a directory that shows
 * the layers below it, streaming: no layer is ever held in memory, and the
 * diffID (sha256 of the uncompressed tar) is computed on the way through.
 *
 * OCI whiteouts are applied, never created: `DIR/.wh.NAME` removes NAME as
 * the layers below had it, `DIR/.wh..wh..opq` removes every child of DIR
 * that this layer did not write itself (the marker may come after some of
 * them). Hostile archives are refused with E_LAYER naming the entry, before
 * anything is written outside the root; see {@link LayerApplier}.
 */
import { execFile } from 'node:child_process';
import { createHash, type Hash } from 'node:crypto';
import { once } from 'node:events';
import { closeSync, fchmodSync, fchownSync, constants as fsConstants, openSync, writeSync, type BigIntStats } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { pipeline, Readable } from 'node:stream';
import { createGunzip, type ZlibOptions } from 'node:zlib';
import { type Extract, extract, type Header } from 'tar-stream';
import type { Digest } from '../../digest.js';
import { ERROR_CODES, KilnError } from '../../errors.js';
import { floorToMicros, setTimes, shouldCopyXattr } from '../../fs/metadata.js';
import { xattrModule } from '../../fs/xattr.js';
import type { TarEntryType } from '../../fs/tar-header.js';
import type { Logger } from '../../log.js';

/** Options of {@link applyLayer}. */
export interface ApplyLayerOptions {
  readonly compression: 'gzip' | 'uncompressed';
  readonly signal?: AbortSignal;
  /** Receives the one debug line written when device nodes cannot be created (no CAP_MKNOD). */
  readonly logger?: Logger;
  /**
   * `layer` (default): OCI whiteouts are applied and the root entry sets the
   * root's metadata. `archive`: a plain tar unpacked into a directory, as
   * `tar -x` (Dockerfile ADD): `.wh.` names are ordinary entries and the
   * root entry is skipped, so the directory keeps its own owner and mode.
   */
  readonly kind?: 'layer' | 'archive';
  /** Every entry gets this owner instead of the archive's (ADD --chown). */
  readonly owner?: { readonly uid: number; readonly gid: number };
}

/** What applying a layer found. */
export interface AppliedLayer {
  /** sha256 of the uncompressed tar, as an image config's rootfs.diff_ids lists it. */
  readonly diffID: Digest;
  /** Tar entries applied (whiteouts included). */
  readonly entries: number;
}

/**
 * Applies one layer tar (stream) onto `root` (a directory that shows the
 * layers below: a writable overlay mount or a native copy). Returns the
 * diffID computed while streaming.
 *
 * Metadata is applied as the archive says: owner (numeric), mode including
 * setuid/setgid/sticky, xattrs (except overlayfs's own `trusted.overlay.*`
 * and the host's `security.selinux`, as export leaves them out), and mtime
 * to the microsecond (Node's utimes cannot set finer; directories last,
 * deepest first, so creating their children does not move them).
 *
 * @throws KilnError E_LAYER for a malformed or hostile archive, naming the entry.
 * @throws the signal's reason when `options.signal` aborts.
 */
export async function applyLayer(source: AsyncIterable<Uint8Array>, root: string, options: ApplyLayerOptions): Promise<AppliedLayer> {
  const { signal } = options;
  signal?.throwIfAborted();
  const hash = createHash('sha256');
  const reader = extract();
  const xattrs = captureXattrs(reader);
  const applier = new LayerApplier(root, { logger: options.logger, archive: options.kind === 'archive', owner: options.owner });
  // Stops the feeding when the extraction fails, or the caller aborts.
  const stop = new AbortController();
  const onAbort = (): void => {
    stop.abort(signal?.reason);
    reader.destroy(signal?.reason as Error);
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  const feeding = feed(decompress(source, options.compression), reader, hash, stop.signal);
  // Observed now, awaited below: a failure must not count as unhandled meanwhile.
  feeding.catch(() => {});
  let entries = 0;
  try {
    for await (const entry of reader) {
      signal?.throwIfAborted();
      entries += 1;
      await applier.apply(entry, xattrs.take());
    }
    await feeding;
    await applier.finish();
  } catch (err) {
    stop.abort(err);
    reader.destroy();
    if (signal?.aborted === true) throw signal.reason;
    if (err instanceof KilnError) throw err;
    throw new KilnError(ERROR_CODES.LAYER, `cannot read the layer: ${(err as Error).message}`, { cause: err });
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  return { diffID: `sha256:${hash.digest('hex')}` as Digest, entries };
}

/** gunzip's output chunk, and how many it may make ahead of the extraction. */
const GUNZIP_CHUNK = 256 * 1024;
const GUNZIP_AHEAD = 32;

/** The uncompressed tar bytes of `source`. */
function decompress(source: AsyncIterable<Uint8Array>, compression: ApplyLayerOptions['compression']): AsyncIterable<Uint8Array> {
  if (compression === 'uncompressed') return source;
  // Bigger output chunks than zlib's 16 KiB (a chunk costs a hop through the
  // tar parser and a write), and room to inflate ahead while files are
  // written: 32 chunks. Read as objects, one chunk at a time: a byte
  // stream's read() joins everything buffered into a new buffer, which
  // copied megabytes per read (a third of a pull's main thread).
  const gunzip = createGunzip({ chunkSize: GUNZIP_CHUNK, readableObjectMode: true, readableHighWaterMark: GUNZIP_AHEAD } as ZlibOptions);
  // The callback form destroys the gunzip stream with any error, so reading it rejects.
  pipeline(Readable.from(source), gunzip, () => {});
  return gunzip;
}

/** Writes the tar bytes into the extractor with backpressure, hashing them on the way. */
async function feed(chunks: AsyncIterable<Uint8Array>, reader: Extract, hash: Hash, stop: AbortSignal): Promise<void> {
  try {
    for await (const chunk of chunks) {
      stop.throwIfAborted();
      hash.update(chunk);
      if (!reader.write(chunk)) await once(reader, 'drain', { signal: stop });
    }
    reader.end(null);
  } catch (err) {
    reader.destroy(err as Error);
    throw err;
  }
}

/** The part of tar-stream 3's extractor that {@link captureXattrs} hooks into. */
interface PaxDecoding {
  readonly _header: { readonly type: string | null } | null;
  _decodeLongHeader(buf: Uint8Array): void;
}

/** One xattr: its name and raw value. */
type Xattr = readonly [string, Buffer];

/**
 * tar-stream decodes pax records as UTF-8 text, which corrupts xattr values
 * that are bytes (`security.capability` is a binary struct: ping would lose
 * its capability). It decodes every pax header in one method that gets the
 * raw bytes, so this wraps that method on this one extractor and keeps the
 * raw `SCHILY.xattr.*` values for the entry that follows (the extractor
 * waits for each entry to be consumed before it reads the next header). The
 * unpack tests' binary xattr check fails if a tar-stream update moves it.
 */
function captureXattrs(reader: Extract): { take(): readonly Xattr[] } {
  const hookable = reader as unknown as PaxDecoding;
  const original = hookable._decodeLongHeader;
  if (typeof original !== 'function') {
    throw new KilnError(ERROR_CODES.INTERNAL, 'this tar-stream version decodes pax headers differently; kiln cannot read binary xattrs with it');
  }
  let pending: readonly Xattr[] = [];
  hookable._decodeLongHeader = function (this: PaxDecoding, buf: Uint8Array): void {
    if (this._header?.type === 'pax-header') pending = paxXattrs(Buffer.from(buf));
    original.call(this, buf);
  };
  return {
    take(): readonly Xattr[] {
      const taken = pending;
      pending = [];
      return taken;
    },
  };
}

const XATTR_KEY = Buffer.from('SCHILY.xattr.');

/** The `SCHILY.xattr.NAME=VALUE` records of a pax header (`LEN key=value\n` each), values as bytes. */
function paxXattrs(buf: Buffer): Xattr[] {
  const out: Xattr[] = [];
  let at = 0;
  while (at < buf.length) {
    const space = buf.indexOf(0x20, at);
    const length = Number(buf.toString('latin1', at, space));
    if (space === -1 || !Number.isSafeInteger(length) || length <= space - at) break;
    const record = buf.subarray(space + 1, at + length - 1);
    at += length;
    const equals = record.indexOf(0x3d);
    if (equals === -1 || !record.subarray(0, XATTR_KEY.length).equals(XATTR_KEY)) continue;
    // GNU tar escapes `%` and `=` in the name; the value is raw bytes.
    const name = record.toString('utf8', XATTR_KEY.length, equals).replace(/%3D/g, '=').replace(/%25/g, '%');
    out.push([name, Buffer.from(record.subarray(equals + 1))]);
  }
  return out;
}

/** One entry's body as the extractor yields it, with its header. */
type Entry = Extract extends AsyncIterable<infer E> ? E : never;

/** One archive entry, checked and decoded. */
interface LayerEntry {
  /** The name as the archive has it, for messages. */
  readonly name: string;
  /** Its components; none for the root. */
  readonly parts: readonly string[];
  readonly type: TarEntryType;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly mtimeNs: bigint;
  readonly linkname: string;
  readonly devmajor: number;
  readonly devminor: number;
  readonly xattrs: readonly Xattr[];
}

const TYPES: Readonly<Record<string, TarEntryType>> = {
  file: 'file',
  'contiguous-file': 'file',
  link: 'hardlink',
  symlink: 'symlink',
  'character-device': 'char',
  'block-device': 'block',
  directory: 'dir',
  fifo: 'fifo',
};

const NS_PER_MS = 1_000_000n;

function layerError(name: string, message: string, cause?: unknown): KilnError {
  return new KilnError(ERROR_CODES.LAYER, `layer entry "${name}": ${message}`, cause === undefined ? {} : { cause });
}

/** The components of an archive path; absolute paths and `..` are refused (`what` names the field in errors). */
function checkedParts(name: string, value: string, what: string): string[] {
  if (value.includes('\0')) throw layerError(name, `the ${what} contains a NUL byte`);
  if (value.startsWith('/')) throw layerError(name, `the ${what} "${value}" is absolute; layer paths are relative to the root`);
  const parts = value.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw layerError(name, `the ${what} "${value}" has a ".." component, which could lead outside the root`);
  return parts;
}

/** Sets `xattrs` on `host` (fs-xattr is loaded only when there is one). */
async function setXattrs(host: string, xattrs: readonly Xattr[]): Promise<void> {
  if (xattrs.length === 0) return;
  const { setAttribute } = await xattrModule();
  for (const [attr, value] of xattrs) await setAttribute(host, attr, value);
}

function decodeEntry(header: Header, xattrs: readonly Xattr[]): LayerEntry {
  const { name } = header;
  // tar-stream types fewer cases than it yields (null for a type it does not know).
  const type = TYPES[String(header.type)];
  if (type === undefined) throw layerError(name, `unsupported entry type ${String(header.type)}`);
  const pax = (header.pax ?? {}) as Readonly<Record<string, string>>;
  // tar-stream applies pax path, linkpath and size itself, but not these.
  const id = (paxValue: string | undefined, fallback: number): number => (paxValue === undefined ? fallback : Number(paxValue));
  const uid = id(pax['uid'], header.uid);
  const gid = id(pax['gid'], header.gid);
  if (!Number.isSafeInteger(uid) || uid < 0 || !Number.isSafeInteger(gid) || gid < 0) throw layerError(name, `bad owner ${uid}:${gid}`);
  const linkname = (header.linkname as string | null) ?? '';
  if (type === 'hardlink' || type === 'symlink') {
    if (linkname === '') throw layerError(name, `a ${type} without a target`);
    if (linkname.includes('\0')) throw layerError(name, 'the link target contains a NUL byte');
  }
  return {
    name,
    parts: checkedParts(name, name, 'name'),
    type,
    mode: header.mode & 0o7777,
    uid,
    gid,
    mtimeNs: pax['mtime'] === undefined ? BigInt(header.mtime.getTime()) * NS_PER_MS : paxTimeNs(name, pax['mtime']),
    linkname,
    devmajor: header.devmajor,
    devminor: header.devminor,
    xattrs: xattrs.filter(([attr]) => shouldCopyXattr(attr)),
  };
}

/** A pax time (`-1.5`, `1600000000.123456789`) in nanoseconds. */
function paxTimeNs(name: string, text: string): bigint {
  const match = /^(-?)(\d+)(?:\.(\d*))?$/.exec(text);
  if (match === null) throw layerError(name, `bad pax mtime "${text}"`);
  const ns = BigInt(match[2] as string) * 1_000_000_000n + BigInt((match[3] ?? '').slice(0, 9).padEnd(9, '0'));
  return match[1] === '-' ? -ns : ns;
}

async function lstatOrUndefined(file: string): Promise<BigIntStats | undefined> {
  try {
    return await fs.lstat(file, { bigint: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Writes all of `data` at the descriptor's position (a write may take less than asked). */
function writeAllSync(fd: number, data: Buffer): void {
  for (let done = 0; done < data.length; ) done += writeSync(fd, data, done);
}

/** The most symlinks one parent path follows, like Linux's ELOOP limit. */
const MAX_SYMLINK_HOPS = 40;

/** Device nodes and fifos made by one shell; more wait for the next. */
const NODE_BATCH = 500;

/** A device node or fifo waiting for the batch that creates it. */
interface PendingNode {
  readonly host: string;
  readonly entry: LayerEntry;
}

/**
 * Applies the entries of one layer, in archive order, onto a root.
 *
 * Safety: every entry's name is relative and free of `..`. Its parent is
 * resolved component by component under the root with lstat; a symlink met
 * on the way (placed by this layer or one below) is followed only when its
 * target is relative and stays inside the root, else the entry is refused.
 * The last component is never followed: whatever is there is replaced. A
 * hardlink's target is resolved the same way. Directories known to be real
 * (made or checked during this apply) are remembered, so a layer of many
 * files in few folders costs no extra lstat per parent.
 */
class LayerApplier {
  readonly #root: string;
  readonly #logger: Logger | undefined;
  /** Paths (relative) known to be real directories, not symlinks. */
  readonly #knownDirs = new Set<string>();
  /** Paths this layer wrote: an opaque marker keeps them. */
  readonly #written = new Set<string>();
  /** Directory mtimes, set once all entries are in. */
  readonly #dirTimes = new Map<string, bigint>();
  readonly #pendingNodes = new Map<string, PendingNode>();
  /** A plain archive (see ApplyLayerOptions.kind): no whiteouts, the root entry skipped. */
  readonly #archive: boolean;
  readonly #owner: { readonly uid: number; readonly gid: number } | undefined;
  #reportedDevices = false;

  constructor(root: string, options: { logger: Logger | undefined; archive: boolean; owner: { readonly uid: number; readonly gid: number } | undefined }) {
    this.#root = root;
    this.#logger = options.logger;
    this.#archive = options.archive;
    this.#owner = options.owner;
  }

  async apply(body: Entry, xattrs: readonly Xattr[]): Promise<void> {
    const name = body.header.name;
    try {
      // `tar -x` takes `/etc/x` as `etc/x` under the directory it unpacks
      // into, hardlink targets too; a layer's absolute name stays refused.
      if (this.#archive) {
        body.header.name = body.header.name.replace(/^\/+/, '');
        if (body.header.type === 'link' && typeof body.header.linkname === 'string') body.header.linkname = body.header.linkname.replace(/^\/+/, '');
      }
      const decoded = decodeEntry(body.header, xattrs);
      await this.#apply(this.#owner === undefined ? decoded : { ...decoded, ...this.#owner }, body);
      // Whatever body this entry had and nobody read (a whiteout's, say) must drain for the next one to come.
      body.resume();
    } catch (err) {
      body.destroy();
      if (err instanceof KilnError) throw err;
      throw layerError(name, (err as Error).message, err);
    }
  }

  /** Creates the batched nodes and sets directory times, deepest first. */
  async finish(): Promise<void> {
    await this.#flushNodes();
    const depth = (rel: string): number => (rel === '' ? 0 : rel.split('/').length);
    const dirs = [...this.#dirTimes].sort(([a], [b]) => depth(b) - depth(a));
    for (const [rel, mtimeNs] of dirs) await setTimes(this.#host(rel), mtimeNs, mtimeNs);
  }

  #host(rel: string): string {
    return path.join(this.#root, rel);
  }

  async #apply(entry: LayerEntry, body: Entry): Promise<void> {
    const base = entry.parts.at(-1);
    if (base === undefined) {
      if (entry.type !== 'dir') throw layerError(entry.name, `the root can only be a directory, not a ${entry.type}`);
      if (this.#archive) return;
      await this.#setMetadata(this.#root, entry, true);
      this.#dirTimes.set('', floorToMicros(entry.mtimeNs));
      return;
    }
    const parentParts = entry.parts.slice(0, -1);
    if (!this.#archive && base.startsWith('.wh.')) {
      await this.#whiteout(entry, parentParts, base.slice('.wh.'.length));
      return;
    }
    const parent = (await this.#resolveDir(entry.name, parentParts, true)) as string;
    const rel = parent === '' ? base : `${parent}/${base}`;
    const host = this.#host(rel);
    this.#pendingNodes.delete(host);
    switch (entry.type) {
      case 'dir':
        await this.#makeDir(rel, entry);
        break;
      case 'file':
        await this.#clear(rel, false);
        await this.#writeFile(host, entry, body);
        break;
      case 'symlink':
        await this.#clear(rel, false);
        await fs.symlink(entry.linkname, host);
        await fs.lchown(host, entry.uid, entry.gid);
        await setTimes(host, floorToMicros(entry.mtimeNs), floorToMicros(entry.mtimeNs));
        break;
      case 'hardlink':
        await this.#link(rel, entry);
        break;
      case 'char':
      case 'block':
      case 'fifo':
        await this.#clear(rel, false);
        this.#pendingNodes.set(host, { host, entry });
        if (this.#pendingNodes.size >= NODE_BATCH) await this.#flushNodes();
        break;
    }
    this.#written.add(rel);
  }

  /**
   * The real directory (relative path) that `parts` lead to inside the root,
   * following symlinks only while they stay inside. Missing directories are
   * created (0755, as tar does for parents the archive leaves out) when
   * `create`, else the result is undefined.
   */
  async #resolveDir(name: string, parts: readonly string[], create: boolean): Promise<string | undefined> {
    const resolved: string[] = [];
    const todo = [...parts];
    let hops = 0;
    let lastLink = '';
    while (todo.length > 0) {
      const part = todo.shift() as string;
      if (part === '' || part === '.') continue;
      if (part === '..') {
        // Only a symlink's target brings `..` here (names were checked).
        if (resolved.length === 0) throw layerError(name, `its parent goes through the symlink "${lastLink}", which leads outside the root`);
        resolved.pop();
        continue;
      }
      resolved.push(part);
      const rel = resolved.join('/');
      if (this.#knownDirs.has(rel)) continue;
      const host = this.#host(rel);
      const stats = await lstatOrUndefined(host);
      if (stats === undefined) {
        if (!create) return undefined;
        await fs.mkdir(host, 0o755);
        this.#knownDirs.add(rel);
      } else if (stats.isDirectory()) {
        this.#knownDirs.add(rel);
      } else if (stats.isSymbolicLink()) {
        hops += 1;
        if (hops > MAX_SYMLINK_HOPS) throw layerError(name, `more than ${MAX_SYMLINK_HOPS} symlinks on the way to its parent (a loop?)`);
        const target = await fs.readlink(host);
        lastLink = `${rel} -> ${target}`;
        // An absolute target means the host's root here: never followed.
        if (target.startsWith('/')) throw layerError(name, `its parent goes through the symlink "${lastLink}", which leads outside the root`);
        resolved.pop();
        todo.unshift(...target.split('/'));
      } else {
        throw layerError(name, `its parent "${rel}" is not a directory`);
      }
    }
    return resolved.join('/');
  }

  /** `DIR/.wh.NAME` (NAME removed) or `DIR/.wh..wh..opq` (DIR made opaque). */
  async #whiteout(entry: LayerEntry, parentParts: readonly string[], target: string): Promise<void> {
    // Pending nodes are this layer's: create them before deciding what to keep.
    await this.#flushNodes();
    if (target === '.wh..opq') {
      const dir = await this.#resolveDir(entry.name, parentParts, false);
      if (dir !== undefined) await this.#clearFromBelow(dir);
      return;
    }
    // Other `.wh..wh.*` names are AUFS bookkeeping, meaningless here.
    if (target.startsWith('.wh.')) return;
    if (target === '' || target === '.' || target === '..') throw layerError(entry.name, `a whiteout of "${target}" is not allowed`);
    const dir = await this.#resolveDir(entry.name, parentParts, false);
    if (dir !== undefined) await this.#remove(dir === '' ? target : `${dir}/${target}`);
  }

  /** Removes the children of `dir` this layer did not write, and theirs below the directories it did. */
  async #clearFromBelow(dir: string): Promise<void> {
    for (const child of await fs.readdir(this.#host(dir))) {
      const rel = dir === '' ? child : `${dir}/${child}`;
      if (!this.#written.has(rel)) await this.#remove(rel);
      else if ((await fs.lstat(this.#host(rel))).isDirectory()) await this.#clearFromBelow(rel);
    }
  }

  /** Removes whatever is at `rel` (a directory with its contents); nothing there is fine. */
  async #remove(rel: string): Promise<void> {
    await this.#clear(rel, false);
  }

  /** Makes room for an entry at `rel`: removes what is there, except a directory when `keepDir`. Returns whether a directory was kept. */
  async #clear(rel: string, keepDir: boolean): Promise<boolean> {
    const stats = await lstatOrUndefined(this.#host(rel));
    if (stats === undefined) return false;
    if (keepDir && stats.isDirectory()) return true;
    if (stats.isDirectory()) this.#forgetDir(rel);
    await fs.rm(this.#host(rel), { recursive: true, force: true });
    return false;
  }

  /** Drops what is remembered about `rel` and everything below it. */
  #forgetDir(rel: string): void {
    const below = `${rel}/`;
    for (const known of this.#knownDirs) if (known === rel || known.startsWith(below)) this.#knownDirs.delete(known);
    for (const dir of this.#dirTimes.keys()) if (dir === rel || dir.startsWith(below)) this.#dirTimes.delete(dir);
  }

  /** A directory over a directory keeps its children and takes the new metadata. */
  async #makeDir(rel: string, entry: LayerEntry): Promise<void> {
    const kept = await this.#clear(rel, true);
    if (!kept) await fs.mkdir(this.#host(rel), 0o700);
    this.#knownDirs.add(rel);
    await this.#setMetadata(this.#host(rel), entry, kept);
    this.#dirTimes.set(rel, floorToMicros(entry.mtimeNs));
  }

  /**
   * A regular file's body and metadata. The file's own calls are synchronous
   * on its descriptor: each is a few microseconds in the page cache, while a
   * promise call is a round trip through libuv's thread pool, and a layer is
   * thousands of them. Gunzip keeps inflating ahead on the pool meanwhile.
   */
  async #writeFile(host: string, entry: LayerEntry, body: Entry): Promise<void> {
    // O_EXCL: the path was just cleared, and a symlink raced in is never followed.
    const fd = openSync(host, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o600);
    try {
      for await (const chunk of body) writeAllSync(fd, chunk as Buffer);
      fchownSync(fd, entry.uid, entry.gid);
      fchmodSync(fd, entry.mode);
    } finally {
      closeSync(fd);
    }
    await setXattrs(host, entry.xattrs);
    await setTimes(host, floorToMicros(entry.mtimeNs), floorToMicros(entry.mtimeNs));
  }

  async #link(rel: string, entry: LayerEntry): Promise<void> {
    const parts = checkedParts(entry.name, entry.linkname, 'hardlink target');
    const base = parts.at(-1);
    if (base === undefined) throw layerError(entry.name, 'a hardlink to the root');
    const dir = await this.#resolveDir(entry.name, parts.slice(0, -1), false);
    const targetRel = dir === undefined ? undefined : dir === '' ? base : `${dir}/${base}`;
    const target = targetRel === undefined ? undefined : this.#host(targetRel);
    if (target !== undefined && this.#pendingNodes.has(target)) await this.#flushNodes();
    const stats = target === undefined ? undefined : await lstatOrUndefined(target);
    if (target === undefined || stats === undefined) throw layerError(entry.name, `its hardlink target "${entry.linkname}" does not exist`);
    if (stats.isDirectory()) throw layerError(entry.name, `its hardlink target "${entry.linkname}" is a directory`);
    if (targetRel === rel) return;
    await this.#clear(rel, false);
    await fs.link(target, this.#host(rel));
  }

  /**
   * Owner, then mode (chown clears setuid/setgid), then xattrs; on a kept
   * directory, xattrs the layer does not list are removed.
   */
  async #setMetadata(host: string, entry: LayerEntry, replaceXattrs: boolean): Promise<void> {
    await fs.lchown(host, entry.uid, entry.gid);
    await fs.chmod(host, entry.mode);
    if (replaceXattrs) {
      const { listAttributes, removeAttribute } = await xattrModule();
      const keep = new Set(entry.xattrs.map(([attr]) => attr));
      for (const attr of await listAttributes(host)) {
        if (!keep.has(attr) && shouldCopyXattr(attr)) await removeAttribute(host, attr);
      }
    }
    await setXattrs(host, entry.xattrs);
  }

  /**
   * Creates the waiting device nodes and fifos with one shell (Node has no
   * mknod). Without CAP_MKNOD (a user namespace) device nodes cannot be made:
   * they are skipped with one debug line, as container runtimes give a
   * container its own /dev anyway. A fifo that fails is an error.
   */
  async #flushNodes(): Promise<void> {
    if (this.#pendingNodes.size === 0) return;
    const nodes = [...this.#pendingNodes.values()];
    this.#pendingNodes.clear();
    const args = nodes.flatMap(({ host, entry }) => [host, entry.type === 'fifo' ? 'p' : entry.type === 'char' ? 'c' : 'b', String(entry.devmajor), String(entry.devminor)]);
    const script = 'while [ $# -gt 0 ]; do if [ "$2" = p ]; then mknod -- "$1" p; else mknod -- "$1" "$2" "$3" "$4"; fi 2>/dev/null || printf "%s\\0" "$1"; shift 4; done';
    const failed = new Set((await shell(script, args)).split('\0').filter((p) => p !== ''));
    const skipped: PendingNode[] = [];
    for (const node of nodes) {
      if (failed.has(node.host)) {
        if (node.entry.type === 'fifo') throw layerError(node.entry.name, 'cannot create the fifo');
        skipped.push(node);
        continue;
      }
      await this.#setMetadata(node.host, node.entry, false);
      await setTimes(node.host, floorToMicros(node.entry.mtimeNs), floorToMicros(node.entry.mtimeNs));
    }
    if (skipped.length > 0 && !this.#reportedDevices) {
      this.#reportedDevices = true;
      this.#logger?.debug({ first: skipped[0]?.entry.name, count: skipped.length }, 'layer device nodes skipped: mknod is not permitted here');
    }
  }
}

/** Runs `sh -c script` with `args`; resolves with its stdout. */
function shell(script: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('sh', ['-c', script, 'sh', ...args], { maxBuffer: 16 * 1024 * 1024 }, (err, stdout) => (err === null ? resolve(stdout) : reject(err)));
  });
}
