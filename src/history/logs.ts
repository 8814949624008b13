/**
 * Reading a build's step logs back: whole, or following a build that is
 * still running in another process. A log is a gzip stream its writer
 * flushes now and then, so a reader decompresses it as it grows: each
 * file is read from where the last read stopped into one gunzip stream.
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { createGunzip, type Gunzip } from 'node:zlib';
import { ERROR_CODES, KilnError } from '../errors.js';
import { type BuildRecord, shownStatus, type VertexRecord } from './record.js';
import type { HistoryStore } from './store.js';

/** How `writeLogs` reads. */
export interface WriteLogsOptions {
  /** Only this vertex: its name, or its digest (or the start of it). */
  readonly vertex?: string;
  /** Keep reading while the build runs; return when it ends. */
  readonly follow?: boolean;
  /** How often a followed build is looked at again (default 200 ms). */
  readonly pollMs?: number;
  readonly signal?: AbortSignal;
}

/** The vertices of `record` that `name` names (all when undefined); E_HISTORY_NOT_FOUND when it names none. */
export function selectVertices(record: BuildRecord, name: string | undefined): VertexRecord[] {
  if (name === undefined) return [...record.vertices];
  const byName = record.vertices.filter((v) => v.name === name);
  if (byName.length > 0) return byName;
  const hex = name.replace(/^sha256:/, '');
  const byDigest = hex.length >= 6 ? record.vertices.filter((v) => v.digest.replace(/^sha256:/, '').startsWith(hex)) : [];
  if (byDigest.length === 1) return byDigest;
  const names = record.vertices.map((v) => `"${v.name}"`).join(', ');
  throw new KilnError(ERROR_CODES.HISTORY_NOT_FOUND, `build ${record.id} has no step "${name}" (its steps: ${names || 'none'})`);
}

/** Vertices in the order they started (those that never started last, in record order). */
function byStart(vertices: readonly VertexRecord[]): VertexRecord[] {
  const at = (v: VertexRecord): number => (v.started === undefined ? Infinity : Date.parse(v.started));
  return vertices.map((v, i) => ({ v, i })).sort((a, b) => at(a.v) - at(b.v) || a.i - b.i).map(({ v }) => v);
}

/**
 * Writes the full logs of build `id` to `out`. One vertex: its output as
 * it was. Several: each under a `==> NAME <==` line, as `tail` heads its
 * files; when following, the heads come whenever the output switches step,
 * and only whole lines are written until the build ends.
 */
export async function writeLogs(store: HistoryStore, id: string, out: Writable, options: WriteLogsOptions = {}): Promise<void> {
  let record = await store.get(id);
  const headed = options.vertex === undefined;
  if (options.follow !== true || shownStatus(record) !== 'running') {
    for (const vertex of byStart(selectVertices(record, options.vertex))) {
      if (vertex.log === undefined) continue;
      if (headed) await write(out, `==> ${vertex.name} <==\n`);
      let last = 0x0a;
      const tail = new LogTail(store.logPath(record.id, vertex.log.file), (data) => {
        last = data.at(-1) ?? last;
        out.write(data);
      });
      await tail.pump(() => drained(out));
      await tail.end();
      if (headed && last !== 0x0a) await write(out, '\n');
    }
    return;
  }
  // Following: every log the build has or gets, read as it grows.
  const tails = new Map<string, { tail: LogTail; name: string; pending: Buffer }>();
  let current: string | undefined;
  const flushLines = async (digest: string, all: boolean): Promise<void> => {
    const entry = tails.get(digest);
    if (entry === undefined) return;
    const cut = all ? entry.pending.length : entry.pending.lastIndexOf(0x0a) + 1;
    if (cut === 0) return;
    if (headed && current !== digest) await write(out, `${current === undefined ? '' : '\n'}==> ${entry.name} <==\n`);
    current = digest;
    const text = entry.pending.subarray(0, cut);
    entry.pending = entry.pending.subarray(cut);
    await write(out, text);
  };
  for (;;) {
    options.signal?.throwIfAborted();
    const ended = shownStatus(record) !== 'running';
    const wanted = ended || options.vertex === undefined ? selectVertices(record, options.vertex) : record.vertices.filter((v) => v.name === options.vertex);
    for (const vertex of wanted) {
      if (vertex.log === undefined || tails.has(vertex.digest)) continue;
      const entry = { name: vertex.name, pending: Buffer.alloc(0), tail: undefined as unknown as LogTail };
      entry.tail = new LogTail(store.logPath(record.id, vertex.log.file), (data) => {
        entry.pending = Buffer.concat([entry.pending, data]);
      });
      tails.set(vertex.digest, entry);
    }
    for (const [digest, { tail }] of tails) {
      await tail.pump(() => drained(out));
      await flushLines(digest, false);
    }
    if (ended) break;
    await sleep(options.pollMs ?? 200, undefined, options.signal === undefined ? {} : { signal: options.signal });
    // Pruned while followed: what was read is all there is.
    record = (await store.reread(record.id)) ?? { ...record, status: 'failed' };
  }
  for (const [digest, { tail }] of tails) {
    await tail.end();
    await flushLines(digest, true);
  }
}

/** One log file read as it grows, decompressed into `onData`. */
class LogTail {
  readonly #path: string;
  readonly #gunzip: Gunzip;
  #file: FileHandle | undefined;
  #offset = 0;
  #broken = false;

  constructor(path: string, onData: (data: Buffer) => void) {
    this.#path = path;
    this.#gunzip = createGunzip();
    this.#gunzip.on('data', onData);
    // A log cut short (its build was killed, or is still being written) ends without gzip's trailer: what came before is kept.
    this.#gunzip.on('error', () => {
      this.#broken = true;
    });
  }

  /** Reads what the file has gained since the last call; `wait` between chunks (the reader's own backpressure). */
  async pump(wait: () => Promise<void>): Promise<void> {
    if (this.#broken) return;
    if (this.#file === undefined) {
      try {
        this.#file = await open(this.#path, 'r');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw err;
      }
    }
    const buffer = Buffer.alloc(256 * 1024);
    for (;;) {
      const { bytesRead } = await this.#file.read(buffer, 0, buffer.length, this.#offset);
      if (bytesRead === 0) return;
      this.#offset += bytesRead;
      const chunk = Buffer.from(buffer.subarray(0, bytesRead));
      await new Promise<void>((resolve) => this.#gunzip.write(chunk, () => resolve()));
      if (this.#broken) return;
      await wait();
    }
  }

  /** Ends the stream: whatever it decompressed has been passed on. */
  async end(): Promise<void> {
    await new Promise<void>((resolve) => {
      if (this.#broken) return resolve();
      this.#gunzip.once('end', resolve).once('error', () => resolve());
      this.#gunzip.end();
    });
    await this.#file?.close();
  }
}

function write(out: Writable, data: string | Buffer): Promise<void> {
  return out.write(data) ? Promise.resolve() : drained(out);
}

function drained(out: Writable): Promise<void> {
  return out.writableNeedDrain ? new Promise((resolve) => out.once('drain', resolve)) : Promise.resolve();
}
