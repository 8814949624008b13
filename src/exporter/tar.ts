/**
 * The tar exporter: a directory as one tar stream, entries in sorted order so
 * the same tree always gives the same bytes (fs/tar-entries.ts writes them,
 * with backpressure and bounded memory).
 */
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ERROR_CODES, KilnError } from '../errors.js';
import { tarChunks } from '../fs/tar-entries.js';
import { walkTree } from '../fs/walk.js';
import { writeFileAtomically } from './staging.js';
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
    const walk = walkTree(srcDir, signal === undefined ? {} : { signal });
    const archive = Readable.from(tarChunks(walk, signal === undefined ? {} : { signal }));
    if (typeof dest === 'string') await writeFileAtomically(path.resolve(dest), archive, signal);
    else await pipeline(archive, dest, signal === undefined ? {} : { signal });
  } catch (err) {
    if (signal?.aborted === true) throw signal.reason;
    if (err instanceof KilnError) throw err;
    throw new KilnError(ERROR_CODES.OUTPUT, `cannot write tar of ${srcDir} to ${shown}: ${(err as Error).message}`, { cause: err });
  }
}

