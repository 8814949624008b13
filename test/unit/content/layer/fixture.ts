/**
 * What the layer tests share: temp dirs, tars built entry by entry with
 * tar-stream's pack (hostile ones included), byte streams in small chunks,
 * and tree descriptions at the precision a layer keeps.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pack } from 'tar-stream';
import { describeTree, type EntryDescription } from '../../../support/tree-fixture.js';

/** A fresh temp dir; remove it with `fs.rm(dir, { recursive: true, force: true })`. */
export function tempDir(): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), 'kiln-layer-'));
}

/** One entry of a test tar. */
export interface TarSpec {
  readonly name: string;
  readonly type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'fifo';
  readonly content?: string;
  readonly linkname?: string;
  readonly mode?: number;
  readonly devmajor?: number;
  readonly devminor?: number;
}

/** A tar holding `entries` in the order given, names exactly as given. */
export async function tarOf(entries: readonly TarSpec[]): Promise<Buffer> {
  const archive = pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of archive) chunks.push(chunk as Buffer);
  })();
  for (const e of entries) {
    const type = e.type ?? 'file';
    archive.entry(
      {
        name: e.name,
        type,
        mode: e.mode ?? (type === 'directory' ? 0o755 : 0o644),
        mtime: new Date(1_700_000_000_000),
        ...(e.linkname === undefined ? {} : { linkname: e.linkname }),
        ...(e.devmajor === undefined ? {} : { devmajor: e.devmajor, devminor: e.devminor ?? 0 }),
      },
      e.content ?? '',
    );
  }
  archive.finalize();
  await collected;
  return Buffer.concat(chunks);
}

/** `bytes` as a stream of small chunks, so entries straddle chunk boundaries. */
export async function* chunked(bytes: Uint8Array, size = 1000): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < bytes.length; at += size) yield bytes.subarray(at, at + size);
}

/** describeTree with mtimes to the microsecond, what applying a layer keeps. */
export async function describeApplied(root: string): Promise<Map<string, EntryDescription>> {
  const described = await describeTree(root);
  for (const [rel, d] of described) described.set(rel, { ...d, mtimeNs: d.mtimeNs - (d.mtimeNs % 1000n) });
  return described;
}

const SECOND = 1_000_000_000n;

/** describeTree with mtimes in whole seconds, what an exported layer keeps of them (and so a round trip through one). */
export async function describeExported(root: string): Promise<Map<string, EntryDescription>> {
  const described = await describeTree(root);
  for (const [rel, d] of described) described.set(rel, { ...d, mtimeNs: d.mtimeNs - (((d.mtimeNs % SECOND) + SECOND) % SECOND) });
  return described;
}
