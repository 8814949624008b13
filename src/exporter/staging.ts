/**
 * Staging paths for exports that must never leave a half-written result:
 * the output is written to a hidden sibling of its destination and renamed
 * into place. A run killed with SIGKILL cannot clean up after itself, so the
 * names carry the writer's pid; the next export to the same destination
 * removes the siblings whose writer is gone.
 */
import { randomBytes } from 'node:crypto';
import { open, readdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ERROR_CODES, KilnError } from '../errors.js';

/** Why a staging path exists: the new output being written, or the previous output moved aside. */
export type StagingPurpose = 'tmp' | 'old';

/** A fresh, unused sibling path of `dest` for this process. */
export function stagingPath(dest: string, purpose: StagingPurpose): string {
  const name = `.${path.basename(dest)}.kiln-${purpose}-${process.pid}-${randomBytes(4).toString('hex')}`;
  return path.join(path.dirname(dest), name);
}

/**
 * Removes staging siblings of `dest` left by processes that no longer run.
 * Those of live processes are kept: another export may be writing them now.
 */
export async function removeStaleStaging(dest: string): Promise<void> {
  const dir = path.dirname(dest);
  const prefix = `.${path.basename(dest)}.kiln-`;
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const match = /^(?:tmp|old)-(\d+)-[0-9a-f]{8}$/.exec(name.slice(prefix.length));
    if (match === null || isRunning(Number(match[1]))) continue;
    await rm(path.join(dir, name), { recursive: true, force: true });
  }
}

function isRunning(pid: number): boolean {
  try {
    // Signal 0 checks that the process exists without touching it.
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Writes `content` to a hidden sibling of `dest`, fsyncs it and renames it
 * over `dest`: a reader sees the old file or the whole new one. On failure
 * or abort the sibling is removed and `dest` is untouched.
 */
export async function writeFileAtomically(dest: string, content: Readable, signal: AbortSignal | undefined): Promise<void> {
  await removeStaleStaging(dest);
  const tmp = stagingPath(dest, 'tmp');
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
    await rename(tmp, dest);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
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
  signal: AbortSignal | undefined,
): Promise<void> {
  try {
    const archive = await produce();
    if (typeof dest === 'string') await writeFileAtomically(path.resolve(dest), archive, signal);
    else await pipeline(archive, dest, signal === undefined ? {} : { signal });
  } catch (err) {
    if (signal?.aborted === true) throw signal.reason;
    if (err instanceof KilnError) throw err;
    const shown = typeof dest === 'string' ? dest : 'the output stream';
    throw new KilnError(ERROR_CODES.OUTPUT, `cannot write ${what} to ${shown}: ${(err as Error).message}`, { cause: err });
  }
}
