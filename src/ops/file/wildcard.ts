/**
 * Wildcard paths of `rm` and `copy` (like `/app/*.go`), matched the way Go's
 * filepath.Match does it, per path component: `*` and `?` never
 * cross `/`, `[...]` is a class, `\` escapes. Only the components from the
 * first one with a wildcard on are matched; the prefix before it is resolved
 * normally (symlinks followed inside the root). Symlinks met while matching
 * are never entered, so a match is always a real entry inside the root.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import picomatch from 'picomatch';
import { resolveInRoot } from '../../fs/safe-path.js';

const GLOB_OPTIONS: picomatch.PicomatchOptions = { dot: true, nobrace: true, noextglob: true, nonegate: true, noglobstar: true };

function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** Whether one path component holds an unescaped `*`, `?` or `[`. */
function isPattern(component: string): boolean {
  return /^(?:[^\\]|\\.)*?[*?[]/.test(component);
}

/** Whether `p` has a wildcard in any component. */
export function hasWildcard(p: string): boolean {
  return p.split('/').some(isPattern);
}

/**
 * The entries of `root` that `p` matches, as absolute paths inside the root
 * (`/dir/a.txt`), in byte order. The prefix before the first wildcard
 * component is given as resolved (a symlinked directory shows under its real
 * name, as in BuildKit). An empty array when nothing matches.
 */
export async function resolveWildcards(root: string, p: string): Promise<string[]> {
  const parts = path.posix.normalize(`/${p}`).split('/').filter((c) => c !== '');
  const first = parts.findIndex(isPattern);
  const prefix = parts.slice(0, first < 0 ? parts.length : first);
  const base = await resolveInRoot(root, `/${prefix.join('/')}`);
  const globs = first < 0 ? [] : parts.slice(first).map((g) => picomatch(g, GLOB_OPTIONS));

  const matches: string[] = [];
  const visit = async (dir: string, depth: number): Promise<void> => {
    let names: string[];
    try {
      names = await fs.readdir(dir);
    } catch (err) {
      // A prefix that does not exist, or is not a directory, matches nothing.
      if (err instanceof Error && 'code' in err && (err.code === 'ENOENT' || err.code === 'ENOTDIR')) return;
      throw err;
    }
    const glob = globs[depth];
    if (glob === undefined) return;
    for (const name of names.filter((n) => glob(n)).sort(byteOrder)) {
      const hostPath = path.join(dir, name);
      if (depth === globs.length - 1) matches.push(hostPath);
      else if ((await fs.lstat(hostPath)).isDirectory()) await visit(hostPath, depth + 1);
    }
  };
  await visit(base, 0);
  return matches.map((m) => `/${path.relative(root, m)}`);
}
