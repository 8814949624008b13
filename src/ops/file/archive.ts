/**
 * Archives a copy with `attemptUnpack` (Dockerfile `ADD` of a local file)
 * unpacks instead of copying, as buildkitd does: a regular file is an
 * archive when, once decompressed (gzip, bzip2, xz, zstd or none), it starts
 * with a valid tar header. Anything else (a gzip of one file, an empty tar,
 * a text file) is copied as it is.
 *
 * An archive is unpacked into the destination as `tar -x` would, with the
 * layer applier (content/layer/unpack.ts) in its archive mode: entries keep
 * the archive's owner, mode, times and xattrs (every owner becomes the
 * copy's when it has one), an existing directory is merged into, anything
 * else in the way is replaced, `.wh.` names are ordinary files, and no entry
 * can land outside the destination (symlinks are resolved inside it).
 *
 * gzip is inflated in-process; bzip2, xz and zstd by the system's tools
 * (installed by scripts/setup.sh), whose absence is named in the error.
 */
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { createGunzip, gunzipSync } from 'node:zlib';
import { start } from '../../command.js';
import { applyLayer } from '../../content/layer/unpack.js';
import { ERROR_CODES, KilnError } from '../../errors.js';
import type { OwnerIds } from '../../fs/metadata.js';

/** How an archive's bytes are compressed. */
export type ArchiveCompression = 'none' | 'gzip' | 'bzip2' | 'xz' | 'zstd';

const BLOCK = 512;
/** Enough of a compressed stream to decompress its first tar block (and a pax header before it). */
const SNIFF_BYTES = 64 * 1024;

/** The decompressing tool for the formats node's zlib does not have. */
const TOOLS: Readonly<Record<'bzip2' | 'xz' | 'zstd', string>> = { bzip2: 'bzip2', xz: 'xz', zstd: 'zstd' };

function compressionOf(head: Uint8Array): ArchiveCompression {
  const b = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
  if (b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b) return 'gzip';
  if (b.length >= 3 && b.toString('latin1', 0, 3) === 'BZh') return 'bzip2';
  if (b.length >= 6 && b.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz';
  if (b.length >= 4 && b.subarray(0, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) return 'zstd';
  return 'none';
}

/**
 * Whether `block` is a tar header: not all zeros (an end-of-archive marker)
 * and with a checksum that matches, summed as unsigned or as signed bytes
 * (old tars did the latter), as tar readers accept it.
 */
export function isTarHeader(block: Uint8Array): boolean {
  if (block.length < BLOCK) return false;
  const field = Buffer.from(block.subarray(148, 156)).toString('latin1').replace(/[\0 ]+$/, '').trim();
  if (!/^[0-7]+$/.test(field)) return false;
  const stored = parseInt(field, 8);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const byte = i >= 148 && i < 156 ? 0x20 : (block[i] as number);
    unsigned += byte;
    signed += byte > 127 ? byte - 256 : byte;
  }
  return stored === unsigned || stored === signed;
}

/** The first `BLOCK` bytes `tool -dc` makes of `file` (fewer if it is shorter or not that format). */
async function toolPrefix(tool: string, file: string): Promise<Uint8Array> {
  const { stdout, done } = start({ file: tool, args: ['-dc', '--', file] }, 'pipe');
  const chunks: Buffer[] = [];
  let size = 0;
  if (stdout !== undefined) {
    for await (const chunk of stdout as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      size += chunk.byteLength;
      // Enough: closing stdout ends the tool with SIGPIPE.
      if (size >= BLOCK) break;
    }
    stdout.destroy();
  }
  const outcome = await done;
  if (outcome.code === null && /cannot run/.test(outcome.stderr) && size === 0) throw missingTool(tool, outcome.stderr);
  return Buffer.concat(chunks).subarray(0, BLOCK);
}

function missingTool(tool: string, detail: string): KilnError {
  return new KilnError(ERROR_CODES.FILE_ACTION, `cannot look into a ${tool} archive: ${detail} (install ${tool === 'xz' ? 'xz-utils' : tool}, as scripts/setup.sh does)`);
}

/**
 * The compression of `file` when it is a tar archive that buildkitd would
 * unpack, else undefined (copy it as a file).
 */
export async function tarArchiveCompression(file: string): Promise<ArchiveCompression | undefined> {
  const handle = await open(file, 'r');
  let head: Uint8Array;
  try {
    const buffer = new Uint8Array(SNIFF_BYTES);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    head = buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
  const compression = compressionOf(head);
  let first: Uint8Array;
  switch (compression) {
    case 'none':
      first = head;
      break;
    case 'gzip':
      try {
        first = gunzipSync(head, { finishFlush: 2 /* Z_SYNC_FLUSH: a truncated stream is not an error */ });
      } catch {
        return undefined;
      }
      break;
    default:
      first = await toolPrefix(TOOLS[compression], file);
  }
  return isTarHeader(first.subarray(0, BLOCK)) ? compression : undefined;
}

/** The uncompressed bytes of `file`, and a check that the decompressor ended well. */
function tarStream(file: string, compression: ArchiveCompression): { tar: AsyncIterable<Uint8Array>; finished: () => Promise<void> } {
  if (compression === 'none' || compression === 'gzip') {
    const raw = createReadStream(file, { highWaterMark: 1024 * 1024 });
    if (compression === 'none') return { tar: raw, finished: async () => {} };
    const gunzip = createGunzip({ chunkSize: 256 * 1024 });
    // pipe() does not carry a read error on; without this the unpack would wait forever.
    raw.on('error', (error) => gunzip.destroy(error));
    return { tar: raw.pipe(gunzip), finished: async () => {} };
  }
  const tool = TOOLS[compression];
  const { stdout, done } = start({ file: tool, args: ['-dc', '--', file] }, 'pipe');
  return {
    tar: stdout ?? Readable.from([]),
    finished: async () => {
      const outcome = await done;
      if (outcome.code === null && /cannot run/.test(outcome.stderr)) throw missingTool(tool, outcome.stderr);
      if (outcome.code !== 0) throw new KilnError(ERROR_CODES.FILE_ACTION, `${tool} cannot decompress the archive: ${outcome.stderr.trim() || `exit code ${String(outcome.code)}`}`);
    },
  };
}

/** What {@link unpackArchive} needs. */
export interface UnpackArchiveOptions {
  /** The archive, a host path. */
  readonly file: string;
  /** How it is compressed, from {@link tarArchiveCompression}. */
  readonly compression: ArchiveCompression;
  /** The existing directory it is unpacked into. */
  readonly dest: string;
  /** The source path as the op wrote it, for messages. */
  readonly shownAs: string;
  readonly owner?: OwnerIds | undefined;
  readonly signal?: AbortSignal | undefined;
}

/** Unpacks a tar archive into `dest` (see the module comment). */
export async function unpackArchive(options: UnpackArchiveOptions): Promise<void> {
  const { tar, finished } = tarStream(options.file, options.compression);
  try {
    await applyLayer(tar, options.dest, {
      compression: 'uncompressed',
      kind: 'archive',
      ...(options.owner === undefined ? {} : { owner: options.owner }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    await finished();
  } catch (err) {
    if (options.signal?.aborted === true) throw err;
    const message = err instanceof Error ? err.message.replace(/^cannot read the layer: |^layer entry /, (m) => (m.startsWith('layer') ? 'entry ' : '')) : String(err);
    throw new KilnError(ERROR_CODES.FILE_ACTION, `cannot unpack the archive "${options.shownAs}": ${message}`, { cause: err });
  }
}
