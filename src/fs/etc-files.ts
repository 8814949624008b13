/**
 * A filesystem's own /etc/passwd and /etc/group, read through its root (so
 * a symlinked /etc stays inside it), never the host's. File ops use them for
 * owners by name, exec ops for the process's user and groups.
 */
import fs from 'node:fs/promises';
import { LayeredTree } from './layered-tree.js';

/** One line of /etc/passwd or /etc/group. */
export interface IdEntry {
  /** The uid (passwd) or gid (group). */
  readonly id: number;
  /** passwd: the primary gid; group: the gid again. */
  readonly gid: number;
  /** group: the member user names; passwd: empty. */
  readonly members: readonly string[];
}

/**
 * `name:x:id:gid-or-members...` lines of `file` inside `root` (a directory,
 * or the layers of an unmounted root), by name. A missing file reads as
 * empty; the first entry of a name wins, as getpwnam does.
 */
export async function readIdFile(root: string | LayeredTree, file: '/etc/passwd' | '/etc/group'): Promise<ReadonlyMap<string, IdEntry>> {
  const tree = typeof root === 'string' ? LayeredTree.ofDirectory(root) : root;
  let text: string;
  try {
    const found = await tree.find(file);
    if (found === undefined) return new Map();
    text = await fs.readFile(found.hostPath, 'utf8');
  } catch (err) {
    if (err instanceof Error && 'code' in err && (err.code === 'ENOENT' || err.code === 'ENOTDIR')) return new Map();
    throw err;
  }
  const entries = new Map<string, IdEntry>();
  for (const line of text.split('\n')) {
    const [name, , id, fourth] = line.split(':');
    if (name === undefined || name === '' || name.startsWith('#') || !/^\d+$/.test(id ?? '')) continue;
    if (entries.has(name)) continue;
    const isGroup = file === '/etc/group';
    entries.set(name, {
      id: Number(id),
      gid: !isGroup && /^\d+$/.test(fourth ?? '') ? Number(fourth) : Number(id),
      members: isGroup ? (fourth ?? '').split(',').filter((m) => m !== '') : [],
    });
  }
  return entries;
}
