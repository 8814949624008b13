/** Small helpers shared by the op adapters. */
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ResultRef } from '../cache/types.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import type { MountedDir } from '../snapshot/types.js';

/** The input at `index` (-1 = scratch). The loader validated the range. */
export function inputAt(inputs: readonly ResultRef[], index: number): ResultRef {
  if (index === -1) return null;
  const ref = inputs[index];
  if (ref === undefined) throw new KilnError(ERROR_CODES.INTERNAL, `input ${index} out of range`);
  return ref;
}


/** Scratch presented as a directory: an empty temp dir, removed on release. */
export async function emptyDir(): Promise<MountedDir> {
  const path = await mkdtemp(join(tmpdir(), 'kiln-scratch-'));
  // An empty filesystem's root looks like any root (mkdtemp makes it 0700).
  await chmod(path, 0o755);
  const release = (): Promise<void> => rm(path, { recursive: true, force: true });
  return { path, release, [Symbol.asyncDispose]: release };
}
