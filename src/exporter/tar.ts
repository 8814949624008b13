/**
 * The tar exporter: a directory as one tar stream, entries in sorted order so
 * the same tree always gives the same bytes (fs/tar-entries.ts writes them,
 * with backpressure and bounded memory).
 */
import { Readable } from 'node:stream';
import { tarChunkBatches } from '../fs/tar-entries.js';
import { walkTreeBatches } from '../fs/walk.js';
import { writeArchiveOutput } from './staging.js';
import type { Exporter, ExportOptions } from './types.js';

/** `type=tar,dest=FILE|-`: the result's files as one tar. */
export const tarExporter: Exporter<'tar'> = {
  type: 'tar',
  async export(result, output, ctx) {
    await exportTar(await result.directory(), output.dest, { signal: ctx.signal, onBytes: (n, done) => ctx.report('bytes written', n, { done }) });
    return {};
  },
};

/**
 * Writes `srcDir` as a tar archive to `dest`.
 *
 * A path is written whole or not at all: the archive goes to a temporary file
 * next to it, is fsync'ed, then renamed over `dest`. A stream (stdout for
 * `dest=-`) receives the archive as it is produced and is ended after it.
 */
export async function exportTar(srcDir: string, dest: string | NodeJS.WritableStream, options: ExportOptions = {}): Promise<void> {
  const { signal } = options;
  const walkOptions = signal === undefined ? {} : { signal };
  await writeArchiveOutput(`tar of ${srcDir}`, () => Readable.from(tarChunkBatches(walkTreeBatches(srcDir, walkOptions), walkOptions)), dest, options);
}

