/** Whether this kernel lets kiln mount overlays where its root is. */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { currentOwner } from '../owner.js';
import { mountOverlay, unmount } from './mounting.js';

const answers = new Map<string, Promise<boolean>>();

/**
 * Mounts a tiny overlay (with relative paths, as the snapshotter does) in
 * `tmpDir` once per process and directory, and remembers the answer.
 */
export function overlaySupported(tmpDir: string): Promise<boolean> {
  let answer = answers.get(tmpDir);
  if (answer === undefined) {
    answer = probe(tmpDir);
    answers.set(tmpDir, answer);
  }
  return answer;
}

async function probe(tmpDir: string): Promise<boolean> {
  await mkdir(tmpDir, { recursive: true });
  const dir = await mkdtemp(path.join(tmpDir, `${currentOwner()}-overlay-probe-`));
  try {
    await Promise.all(['lower', 'upper', 'work', 'merged'].map((d) => mkdir(path.join(dir, d))));
    await mountOverlay(dir, { type: 'overlay', lower: ['lower'], upper: { dir: 'upper', work: 'work' } }, path.join(dir, 'merged'));
    await unmount(path.join(dir, 'merged'));
    return true;
  } catch {
    return false;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
