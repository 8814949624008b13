/**
 * A scratch area for file-op tests: a target and a source root next to an
 * "outside" directory whose state is recorded, so a test can assert that an
 * action changed nothing outside its roots.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { CopyAction, FileAction, FileActionBody } from '../../../src/llb/types.js';

/** The directories of one test. */
export interface Area {
  readonly base: string;
  readonly target: string;
  readonly source: string;
  readonly outside: string;
  /** Everything under `base` except the two roots: names, types, contents, modes, times. */
  outsideState(): Promise<string[]>;
  dispose(): Promise<void>;
}

async function describeTree(dir: string, skip: ReadonlySet<string>, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const name of (await fs.readdir(dir)).sort()) {
    const p = path.join(dir, name);
    if (skip.has(p)) continue;
    const st = await fs.lstat(p, { bigint: true });
    const rel = `${prefix}${name}`;
    const content = st.isFile() ? await fs.readFile(p, 'utf8') : st.isSymbolicLink() ? `-> ${await fs.readlink(p)}` : '';
    out.push(`${rel} ${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.mtimeNs} ${content}`);
    if (st.isDirectory()) out.push(...(await describeTree(p, skip, `${rel}/`)));
  }
  return out;
}

/** Makes a fresh area with a sentinel file outside the roots. */
export async function makeArea(): Promise<Area> {
  const base = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-fileop-'));
  const target = path.join(base, 'target');
  const source = path.join(base, 'source');
  const outside = path.join(base, 'outside');
  await Promise.all([fs.mkdir(target), fs.mkdir(source), fs.mkdir(outside)]);
  await fs.writeFile(path.join(outside, 'secret'), 'do not touch');
  await fs.mkdir(path.join(outside, 'dir'));
  await fs.writeFile(path.join(outside, 'dir/file'), 'also not');
  const skip = new Set([target, source]);
  return {
    base,
    target,
    source,
    outside,
    outsideState: () => describeTree(base, skip),
    dispose: () => fs.rm(base, { recursive: true, force: true }),
  };
}

/** Writes a tree: `name/` is a directory, `{ link }` a symlink, a string a file. */
export async function writeTree(root: string, spec: Readonly<Record<string, string | { link: string }>>): Promise<void> {
  for (const [rel, value] of Object.entries(spec)) {
    const p = path.join(root, rel);
    await fs.mkdir(path.dirname(p), { recursive: true });
    if (typeof value !== 'string') await fs.symlink(value.link, p);
    else if (rel.endsWith('/')) await fs.mkdir(p, { recursive: true });
    else await fs.writeFile(p, value);
  }
}

/** Lists a root as `rel` (dirs end in `/`, links as `rel -> target`, files as `rel=content`), sorted. */
export async function listTree(root: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const name of (await fs.readdir(path.join(root, prefix))).sort()) {
    const rel = `${prefix}${name}`;
    const p = path.join(root, rel);
    const st = await fs.lstat(p);
    if (st.isDirectory()) out.push(`${rel}/`, ...(await listTree(root, `${rel}/`)));
    else if (st.isSymbolicLink()) out.push(`${rel} -> ${await fs.readlink(p)}`);
    else out.push(`${rel}=${await fs.readFile(p, 'utf8')}`);
  }
  return out;
}

/** A file action with the plumbing fields filled in. */
export function action(body: FileActionBody): FileAction {
  return { ...body, input: 0, secondaryInput: -1, output: 0 };
}

/** A copy action with BuildKit's defaults and the given fields. */
export function copyAction(fields: Partial<CopyAction> & Pick<CopyAction, 'src' | 'dest'>): FileAction {
  return action({
    kind: 'copy',
    copy: {
      followSymlink: false,
      dirCopyContents: false,
      createDestPath: false,
      allowWildcard: false,
      allowEmptyWildcard: false,
      includePatterns: [],
      excludePatterns: [],
      alwaysReplaceExistingDestPaths: false,
      ...fields,
    },
  });
}

/** Asserts that a promise rejects with a KilnError of `code` whose message includes `text` and no host path. */
export async function rejectsWith(promise: Promise<unknown>, code: string, text: string, area: Area): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof Error && 'code' in err, `not a KilnError: ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.ok(err.message.includes(text), `"${err.message}" does not mention ${text}`);
    assert.ok(!err.message.includes(area.base), `"${err.message}" shows a host path`);
    return true;
  });
}
