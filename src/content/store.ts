/**
 * The content store: blobs (layers, configs, manifests) addressed by their
 * digest, under ROOT/content/blobs/sha256/HEX. A blob is written to a temp
 * file in kiln's scratch dir (same filesystem), hashed as it streams,
 * fsynced, checked against the digest and size it was promised, and only
 * then renamed into place; so a blob in the store is always whole and
 * verified, and a crash leaves at most a temp file, which the next process
 * sweeps (its name starts with the dead owner's token).
 *
 * A blob is garbage once no record keeps it (./collect.ts). What a running
 * build reads or writes is protected by a hold (`BlobHolds`): every method
 * that hands out a blob, or finds or stores one, holds its digest first, and
 * the collector deletes only while no process can add a hold, skipping the
 * held ones. A build that finds a blob is then sure to keep it.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, type ReadStream } from 'node:fs';
import { unlinkSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { type Digest, isDigest } from '../digest.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import { currentOwner } from '../owner.js';
import { rootLayout } from '../store/layout.js';
import type { ContentRecords } from './records.js';

/** A stored blob's identity. */
export interface BlobInfo {
  readonly digest: Digest;
  readonly size: number;
}

/** What a written blob must turn out to be; a mismatch rejects and stores nothing. */
export interface BlobExpectation {
  readonly digest?: Digest;
  readonly size?: number;
  /** Named in the error when content does not match (e.g. the reference it came from). */
  readonly what?: string;
}

/** Which blobs running builds use, shared between processes (kiln backs it with a lease). */
export interface BlobHolds {
  /** Marks `digest` in use by this process until it closes; recorded before this returns. */
  hold(digest: Digest): void;
  /** Runs `fn` with the digests live processes hold, while no process can add a hold. */
  exclusive<T>(fn: (held: ReadonlySet<Digest>) => T): T;
}

/** A blob file as found on disk. */
export interface StoredBlob {
  readonly digest: Digest;
  readonly size: number;
  readonly modifiedAt: number;
}

/** What a content store is opened with besides its root. */
export interface ContentStoreOptions {
  /** The content folder's tables (the session's store); needed by image sources and outputs. */
  readonly records?: ContentRecords;
  /** Holds on the blobs this process uses; without them, nothing protects a blob from a concurrent collector. */
  readonly holds?: BlobHolds;
}

/** Blobs by digest in one kiln root. */
export class ContentStore {
  readonly #blobs: string;
  readonly #tmp: string;
  readonly #records: ContentRecords | undefined;
  readonly #holds: BlobHolds | undefined;

  constructor(root: string, options: ContentStoreOptions = {}) {
    const layout = rootLayout(root);
    this.#blobs = layout.blobs;
    this.#tmp = layout.tmp;
    this.#records = options.records;
    this.#holds = options.holds;
  }

  /** The content folder's tables. */
  get records(): ContentRecords {
    if (this.#records === undefined) throw new KilnError(ERROR_CODES.INTERNAL, 'this content store was opened without its records (open a Session)');
    return this.#records;
  }

  /** The file of a blob (which may not exist); the blob is held from now on. */
  path(digest: Digest): string {
    const file = this.#file(digest);
    this.#holds?.hold(digest);
    return file;
  }

  /** The blob's size, or undefined when the store does not have it (held either way: a build asking for it may write it next). */
  async size(digest: Digest): Promise<number | undefined> {
    const info = await stat(this.path(digest)).catch(() => undefined);
    return info?.isFile() === true ? info.size : undefined;
  }

  /** Every blob file in the store (not held: this is the collector's view). */
  async list(): Promise<StoredBlob[]> {
    const names = await readdir(this.#blobs).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [] as string[];
      throw err;
    });
    const found = await Promise.all(
      names.map(async (name) => {
        const digest = `sha256:${name}` as Digest;
        if (!isDigest(digest)) return undefined;
        const info = await stat(path.join(this.#blobs, name)).catch(() => undefined);
        return info?.isFile() === true ? { digest, size: info.size, modifiedAt: info.mtimeMs } : undefined;
      }),
    );
    return found.filter((b) => b !== undefined);
  }

  /** A JSON blob as the collector reads it: holding nothing; undefined when missing or not JSON. */
  async peekJson<T>(digest: Digest): Promise<T | undefined> {
    try {
      return JSON.parse((await readFile(this.#file(digest))).toString('utf8')) as T;
    } catch {
      return undefined;
    }
  }

  /**
   * Deletes the blobs of `candidates` that no live process holds, while no
   * hold can be added; returns those deleted. Without holds (a store opened
   * on its own), it deletes them all.
   */
  removeUnheld(candidates: readonly Digest[]): Digest[] {
    const sweep = (held: ReadonlySet<Digest>): Digest[] => {
      const removed: Digest[] = [];
      for (const digest of candidates) {
        if (held.has(digest)) continue;
        try {
          // Synchronous: this runs inside the holds' write transaction.
          unlinkSync(this.#file(digest));
          removed.push(digest);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        }
      }
      return removed;
    };
    return this.#holds === undefined ? sweep(new Set()) : this.#holds.exclusive(sweep);
  }

  async has(digest: Digest): Promise<boolean> {
    return (await this.size(digest)) !== undefined;
  }

  /** A stream of the blob's bytes. */
  async open(digest: Digest): Promise<ReadStream> {
    if (!(await this.has(digest))) throw missing(digest);
    // Blobs are read whole and in order: large reads mean fewer hops through the thread pool.
    return createReadStream(this.path(digest), { highWaterMark: 1024 * 1024 });
  }

  async readBytes(digest: Digest): Promise<Buffer> {
    try {
      return await readFile(this.path(digest));
    } catch (err) {
      throw missing(digest, err);
    }
  }

  async readJson<T>(digest: Digest): Promise<T> {
    const bytes = await this.readBytes(digest);
    try {
      return JSON.parse(bytes.toString('utf8')) as T;
    } catch (err) {
      throw new KilnError(ERROR_CODES.CONTENT, `blob ${digest} is not valid JSON`, { cause: err });
    }
  }

  /**
   * Writes a blob from bytes or a stream, verified against `expect`. When the
   * expected digest is already stored, the source is not read at all.
   */
  async write(
    source: Uint8Array | AsyncIterable<Uint8Array>,
    expect: BlobExpectation = {},
    signal?: AbortSignal,
  ): Promise<BlobInfo> {
    if (expect.digest !== undefined) {
      const size = await this.size(expect.digest);
      if (size !== undefined) return { digest: expect.digest, size };
    }
    await mkdir(this.#blobs, { recursive: true });
    await mkdir(this.#tmp, { recursive: true });
    const tmp = path.join(this.#tmp, `${currentOwner()}-blob-${randomBytes(6).toString('hex')}`);
    const hash = createHash('sha256');
    let size = 0;
    const file = await open(tmp, 'wx', 0o644);
    let renamed = false;
    try {
      const chunks = source instanceof Uint8Array ? [source] : source;
      for await (const chunk of chunks) {
        signal?.throwIfAborted();
        hash.update(chunk);
        size += chunk.byteLength;
        if (expect.size !== undefined && size > expect.size) throw mismatch(expect, `more than the ${expect.size} bytes promised`);
        await file.write(chunk);
      }
      const digest = `sha256:${hash.digest('hex')}` as Digest;
      if (expect.size !== undefined && size !== expect.size) throw mismatch(expect, `${size} bytes, not the ${expect.size} promised`);
      if (expect.digest !== undefined && digest !== expect.digest) throw mismatch(expect, `digest ${digest}, not ${expect.digest}`);
      await file.sync();
      await file.close();
      // this.path holds the digest before the blob appears: a collector that lists it sees the hold.
      await rename(tmp, this.path(digest));
      renamed = true;
      return { digest, size };
    } finally {
      if (!renamed) {
        await file.close().catch(() => undefined);
        await rm(tmp, { force: true });
      }
    }
  }

  #file(digest: Digest): string {
    if (!isDigest(digest)) throw new KilnError(ERROR_CODES.CONTENT, `not a sha256 digest: ${digest}`);
    return path.join(this.#blobs, digest.slice('sha256:'.length));
  }

  /** Writes a JSON document as a blob (as given: the caller decides the bytes). */
  async writeJson(value: unknown): Promise<BlobInfo & { readonly bytes: Buffer }> {
    const bytes = Buffer.from(JSON.stringify(value), 'utf8');
    return { ...(await this.write(bytes)), bytes };
  }
}

function missing(digest: Digest, cause?: unknown): KilnError {
  return new KilnError(ERROR_CODES.CONTENT, `blob ${digest} is not in kiln's content store`, cause === undefined ? {} : { cause });
}

function mismatch(expect: BlobExpectation, got: string): KilnError {
  const what = expect.what === undefined ? 'content' : expect.what;
  return new KilnError(ERROR_CODES.CONTENT, `${what} did not match its descriptor: got ${got}; it was not stored`);
}
