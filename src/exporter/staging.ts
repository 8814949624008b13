/**
 * Staging paths for exports that must never leave a half-written result:
 * an archive is written to a hidden sibling of its destination and renamed
 * into place; a local output is copied into a hidden directory inside its
 * destination and moved into place entry by entry.
 *
 * A run killed with SIGKILL cannot clean up after itself, so every staging
 * name carries its writer's pid, and the next export that writes into the
 * same directory removes the staging entries whose writer is gone, whatever
 * output they were for. A run that ends any other way (an error, SIGINT or
 * SIGTERM, even a second signal that exits at once) removes its own: each
 * staging path is registered until its export is done, and the ones still
 * registered when the process exits are removed synchronously then.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { open, readdir, realpath, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { ERROR_CODES, KilnError } from '../errors.js';
import type { ExportOptions } from './types.js';

/**
 * Why a staging path exists: an archive being written (`tmp`), the previous
 * output moved aside by kiln versions that replaced whole directories
 * (`old`), or a local output's copy before it is moved into place (`out`).
 */
export type StagingPurpose = 'tmp' | 'old' | 'out';

/** `<anything>kiln-<purpose>-<pid>-<8 hex>`, hidden: the shape of every staging name. */
const STAGING_NAME = /^\..*kiln-(?:tmp|old|out)-(\d+)-[0-9a-f]{8}$/;

/** A fresh, unused sibling path of `dest` for this process. */
export function stagingPath(dest: string, purpose: StagingPurpose): string {
  return path.join(path.dirname(dest), `.${path.basename(dest)}.kiln-${purpose}-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/** A fresh, unused path inside the directory `dir` for this process. */
export function stagingPathIn(dir: string, purpose: StagingPurpose): string {
  return path.join(dir, `.kiln-${purpose}-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/** Staging paths of this process that are not finished yet: removed at exit if still here. */
const liveStaging = new Set<string>();
let exitHookInstalled = false;

/**
 * Registers `stagingPath` for removal should the process exit before
 * {@link releaseStaging} is called. The removal at exit is synchronous
 * (Node runs no async work then); it is the last resort after an abort has
 * already removed what it could.
 */
export function holdStaging(stagingPath: string): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const p of liveStaging) rmSync(p, { recursive: true, force: true });
    });
  }
  liveStaging.add(stagingPath);
}

/** Removes `stagingPath` (whatever is left of it) and forgets it. */
export async function releaseStaging(stagingPath: string): Promise<void> {
  try {
    await rm(stagingPath, { recursive: true, force: true });
  } finally {
    liveStaging.delete(stagingPath);
  }
}

/**
 * Removes the staging entries in `dir` left by processes that no longer run.
 * Those of live processes are kept: another export may be writing them now.
 */
export async function removeStaleStaging(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return;
    throw err;
  }
  for (const name of names) {
    const match = STAGING_NAME.exec(name);
    if (match === null || isRunning(Number(match[1]))) continue;
    await rm(path.join(dir, name), { recursive: true, force: true });
  }
}

function isRunning(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    // Signal 0 checks that the process exists without touching it.
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Where a file output goes: its path, and whether it is written in place rather than renamed over. */
export interface FileDestination {
  readonly path: string;
  readonly inPlace: boolean;
}

/**
 * Where a file output named `dest` really goes. A device, a FIFO or a socket
 * (`dest=/dev/null`, `/dev/stdout`, a named pipe) is written in place:
 * renaming a new file over it would replace the node itself, and /dev/null
 * would become a regular file for every program on the machine. A symbolic
 * link is followed, so the file it points to is replaced and the link stays
 * (a dangling link is replaced). A directory is refused.
 */
export async function fileDestination(dest: string): Promise<FileDestination> {
  const target = await stat(dest).catch((err: unknown) => {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  });
  if (target === undefined) return { path: dest, inPlace: false };
  if (target.isDirectory()) throw new KilnError(ERROR_CODES.OUTPUT, `${dest} is a directory; a file output needs a file path (a directory output is type=local)`);
  if (!target.isFile()) return { path: dest, inPlace: true };
  return { path: await realpath(dest), inPlace: false };
}

/**
 * Writes `content` to a hidden sibling of `dest`, fsyncs it and renames it
 * over `dest`: a reader sees the old file or the whole new one. On failure
 * or abort the sibling is removed and `dest` is untouched. A `dest` that is
 * not a file (see {@link fileDestination}) is written in place.
 */
export async function writeFileAtomically(dest: string, content: Readable, signal: AbortSignal | undefined): Promise<void> {
  const where = await fileDestination(dest);
  if (where.inPlace) {
    const handle = await open(where.path, 'w');
    // The stream closes the handle when it ends or fails.
    await pipeline(content, handle.createWriteStream(), signal === undefined ? {} : { signal });
    return;
  }
  await removeStaleStaging(path.dirname(where.path));
  const tmp = stagingPath(where.path, 'tmp');
  holdStaging(tmp);
  try {
    const handle = await open(tmp, 'wx', 0o666);
    // The stream closes the handle when it ends or fails.
    await pipeline(content, handle.createWriteStream(), signal === undefined ? {} : { signal });
    const again = await open(tmp, 'r');
    try {
      await again.sync();
    } finally {
      await again.close();
    }
    await rename(tmp, where.path);
  } finally {
    await releaseStaging(tmp);
  }
}

/**
 * Writes the archive `produce` makes to `dest`: a path whole or not at all
 * (writeFileAtomically), a stream (stdout for `dest=-`) as it is produced.
 * An abort rethrows its reason; a failure that is not already a KilnError
 * becomes an OUTPUT error saying what (`what`) could not be written where.
 */
export async function writeArchiveOutput(
  what: string,
  produce: () => Readable | Promise<Readable>,
  dest: string | NodeJS.WritableStream,
  options: ExportOptions,
): Promise<void> {
  const { signal, onBytes } = options;
  try {
    let written = 0;
    const produced = await produce();
    const archive = onBytes === undefined ? produced : Readable.from(counted(produced, (n) => onBytes((written += n), false)));
    if (typeof dest === 'string') await writeFileAtomically(path.resolve(dest), archive, signal);
    else await pipeline(archive, dest, signal === undefined ? {} : { signal });
    onBytes?.(written, true);
  } catch (err) {
    if (signal?.aborted === true) throw signal.reason;
    if (err instanceof KilnError) throw err;
    const shown = typeof dest === 'string' ? dest : 'the output stream';
    throw new KilnError(ERROR_CODES.OUTPUT, `cannot write ${what} to ${shown}: ${(err as Error).message}`, { cause: err });
  }
}

/** The chunks of `source`, each length told to `count` as it passes. */
async function* counted(source: AsyncIterable<Buffer>, count: (bytes: number) => void): AsyncGenerator<Buffer> {
  for await (const chunk of source) {
    count(chunk.length);
    yield chunk;
  }
}
