/** Disk usage of a directory's content, the way `du` counts it. */
import { lstat, readdir } from 'node:fs/promises';
import path from 'node:path';
import type { Usage } from './types.js';

/**
 * Bytes allocated (blocks, not apparent sizes) and inodes used by everything
 * below `dir`, not counting `dir` itself; a file with several hardlinks
 * counts once.
 */
export async function diskUsage(dir: string): Promise<Usage> {
  const seen = new Set<string>();
  let size = 0;
  let inodes = 0;
  async function walk(d: string): Promise<void> {
    const names = await readdir(d);
    await Promise.all(
      names.map(async (name) => {
        const p = path.join(d, name);
        const st = await lstat(p);
        if (st.nlink > 1 && !st.isDirectory()) {
          const id = `${st.dev}:${st.ino}`;
          if (seen.has(id)) return;
          seen.add(id);
        }
        size += st.blocks * 512;
        inodes += 1;
        if (st.isDirectory()) await walk(p);
      }),
    );
  }
  await walk(dir);
  return { size, inodes };
}
