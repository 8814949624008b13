/**
 * Writes a response body to a new file, seeing every chunk on the way (to
 * hash it), with memory bounded by two batches.
 *
 * Chunks arrive at socket size (64 KiB). A write stream would make one
 * thread-pool write and several promise turns per chunk; here they are
 * gathered into ~1 MiB batches, each one `writev`, while the socket keeps
 * being read. The response is paused only when a batch is ready while the
 * one before is still being written, so at most two batches are held.
 */
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';

/** Bytes gathered before one write. */
const BATCH_BYTES = 1024 * 1024;

/** Writes `res`'s body into `file` (created, mode 0600), calling `onChunk` with each chunk first. */
export async function writeBodyFile(res: IncomingMessage, file: string, onChunk: (chunk: Buffer) => void): Promise<void> {
  // The connection may fail while the file is being opened: listen before the first await.
  let early: unknown;
  let whenFailed: ((err: unknown) => void) | undefined;
  const failed = (err: unknown): void => {
    if (whenFailed === undefined) early ??= err;
    else whenFailed(err);
  };
  res.on('error', failed);
  // A connection closed before the body ended, without an error of its own.
  res.on('close', () => {
    if (!res.complete) failed(Object.assign(new Error('the connection closed before the body ended'), { code: 'ECONNRESET' }));
  });
  let handle: FileHandle;
  try {
    handle = await open(file, 'wx', 0o600);
  } catch (err) {
    res.destroy();
    throw err;
  }
  try {
    await new Promise<void>((resolve, reject) => {
      let batch: Buffer[] = [];
      let batchBytes = 0;
      /** The last write queued; writes run one after the other. */
      let queued: Promise<void> = Promise.resolve();
      let writing = 0;
      let settled = false;
      const fail = (err: unknown): void => {
        if (settled) return;
        settled = true;
        res.destroy();
        reject(err);
      };
      if (early !== undefined) return fail(early);
      whenFailed = fail;
      const flush = (): Promise<void> => {
        const chunks = batch;
        batch = [];
        batchBytes = 0;
        writing++;
        queued = queued.then(() => writeAll(handle, chunks)).finally(() => writing--);
        return queued;
      };
      res.on('data', (chunk: Buffer) => {
        if (settled) return;
        try {
          onChunk(chunk);
        } catch (err) {
          fail(err);
          return;
        }
        batch.push(chunk);
        batchBytes += chunk.byteLength;
        if (batchBytes < BATCH_BYTES) return;
        const busy = writing > 0;
        if (busy) res.pause();
        flush().then(() => {
          if (busy && !settled) res.resume();
        }, fail);
      });
      res.on('end', () => {
        flush().then(() => {
          if (settled) return;
          settled = true;
          resolve();
        }, fail);
      });
    });
  } finally {
    await handle.close();
  }
}

/** Writes every byte of `chunks` at the file's current end (a short write is finished). */
async function writeAll(handle: FileHandle, chunks: readonly Buffer[]): Promise<void> {
  if (chunks.length === 0) return;
  const total = chunks.reduce((n, c) => n + c.byteLength, 0);
  const { bytesWritten } = await handle.writev(chunks);
  if (bytesWritten === total) return;
  let rest = Buffer.concat(chunks).subarray(bytesWritten);
  while (rest.byteLength > 0) {
    const { bytesWritten: n } = await handle.write(rest);
    rest = rest.subarray(n);
  }
}
