/**
 * The content collector: the blob half of kiln's one mark and sweep. The
 * cache manager has swept results and snapshots; what is left decides which
 * blobs stay:
 *
 *     live snapshot layers -> their layer-blob records -> those blobs
 *     named images         -> manifest, config, layers
 *     resolved references  -> manifest and config, while a live layer still
 *                             holds the manifest's top layer blob (a cached
 *                             result uses the image)
 *
 * Records whose reason is gone (a layer's snapshot removed, a reference
 * whose image no snapshot holds) are dropped, and every blob nothing marks
 * is deleted unless a running build holds it (./store.ts). The marking is a
 * pure function, so it can be read and tested apart from the disk.
 */
import type { Digest } from '../digest.js';
import type { ContentStore, StoredBlob } from './store.js';
import type { LayerBlobRecord, NamedImageRecord, ResolvedRecord } from './records.js';
import type { ImageManifest } from './types.js';
import { SOURCE_VARIANT } from './layer-blobs.js';

/** What the marking decides on. */
export interface ContentView {
  /** Ids of the layers of every snapshot still stored. */
  readonly liveLayers: ReadonlySet<string>;
  readonly layerBlobs: ReadonlyMap<string, LayerBlobRecord>;
  readonly images: ReadonlyMap<string, NamedImageRecord>;
  readonly resolved: ReadonlyMap<string, ResolvedRecord>;
  /** Manifests that are stored, by digest (read from the store). */
  readonly manifests: ReadonlyMap<Digest, ImageManifest>;
}

/** What stays, and which records go. */
export interface ContentMarks {
  readonly blobs: ReadonlySet<Digest>;
  /** Why each marked blob is kept, for `kiln du`. */
  readonly reasons: ReadonlyMap<Digest, string>;
  readonly deadLayerRecords: readonly string[];
  readonly deadResolved: readonly string[];
}

/** Marks the blobs the view keeps. */
export function markContent(view: ContentView): ContentMarks {
  const blobs = new Set<Digest>();
  const reasons = new Map<Digest, string>();
  const mark = (digest: Digest, reason: string): void => {
    blobs.add(digest);
    if (!reasons.has(digest)) reasons.set(digest, reason);
  };
  const markImage = (manifestDigest: Digest, name: string): void => {
    mark(manifestDigest, `manifest of ${name}`);
    const manifest = view.manifests.get(manifestDigest);
    if (manifest === undefined) return;
    mark(manifest.config.digest, `config of ${name}`);
    manifest.layers.forEach((layer, i) => mark(layer.digest, `layer ${i + 1}/${manifest.layers.length} of ${name}`));
  };

  // Blobs are described by the first reason found: named images, then references, then layers.
  const deadLayerRecords: string[] = [];
  const sourceBlobs = new Set<Digest>();
  for (const [layerId, record] of view.layerBlobs) {
    const source = record.blobs[SOURCE_VARIANT];
    if (view.liveLayers.has(layerId) && source !== undefined) sourceBlobs.add(source.digest);
  }
  for (const [name, image] of view.images) markImage(image.manifest.digest, name);
  const deadResolved: string[] = [];
  for (const [key, record] of view.resolved) {
    const top = view.manifests.get(record.descriptor.digest)?.layers.at(-1);
    if (top !== undefined && sourceBlobs.has(top.digest)) markImage(record.descriptor.digest, key);
    else deadResolved.push(key);
  }
  for (const [layerId, record] of view.layerBlobs) {
    if (!view.liveLayers.has(layerId)) {
      deadLayerRecords.push(layerId);
      continue;
    }
    for (const [variant, blob] of Object.entries(record.blobs)) mark(blob.digest, `layer ${layerId} (${variant === SOURCE_VARIANT ? 'as pulled' : variant})`);
  }
  return { blobs, reasons, deadLayerRecords, deadResolved };
}

/** One blob as `kiln du` lists it. */
export interface BlobUsage extends StoredBlob {
  /** Why it is kept (empty: nothing keeps it; the next prune removes it). */
  readonly reason: string;
  readonly held: boolean;
}

/** What a sweep removed. */
export interface ContentSweep {
  readonly removed: readonly StoredBlob[];
  readonly records: number;
}

/**
 * The records and stored manifests of `content`. The live layers are asked
 * for after the records are read: a layer's record is written after its
 * snapshot is committed, so every record read has its snapshot in that
 * list, and a layer id is never reused, so a record judged dead stays dead.
 */
export async function contentView(content: ContentStore, liveLayers: () => Promise<ReadonlySet<string>>, stored: readonly StoredBlob[]): Promise<ContentView> {
  const { records } = content;
  records.env.refresh();
  const layerBlobs = new Map(records.layerBlobs.entries());
  const images = new Map(records.images.entries());
  const resolved = new Map(records.resolved.entries());
  const live = await liveLayers();
  const present = new Set(stored.map((b) => b.digest));
  const manifests = new Map<Digest, ImageManifest>();
  for (const digest of [...[...images.values()].map((i) => i.manifest.digest), ...[...resolved.values()].map((r) => r.descriptor.digest)]) {
    if (manifests.has(digest) || !present.has(digest)) continue;
    // A blob removed or damaged meanwhile keeps nothing.
    const manifest = await content.peekJson<ImageManifest>(digest);
    if (manifest !== undefined && Array.isArray(manifest.layers)) manifests.set(digest, manifest);
  }
  return { liveLayers: live, layerBlobs, images, resolved, manifests };
}

/**
 * Sweeps the content store: drops dead records, then deletes the blobs
 * nothing marks and no running build holds. Blobs are listed before the
 * records are read, so a blob written later is not a candidate at all.
 */
export async function sweepContent(content: ContentStore, liveLayers: () => Promise<ReadonlySet<string>>): Promise<ContentSweep> {
  const stored = await content.list();
  const marks = markContent(await contentView(content, liveLayers, stored));
  const { records } = content;
  const dropped = records.env.write(() => {
    let n = 0;
    for (const id of marks.deadLayerRecords) {
      if (records.layerBlobs.get(id) !== undefined) {
        records.layerBlobs.remove(id);
        n++;
      }
    }
    for (const key of marks.deadResolved) {
      if (records.resolved.get(key) !== undefined) {
        records.resolved.remove(key);
        n++;
      }
    }
    return n;
  });
  const candidates = stored.filter((b) => !marks.blobs.has(b.digest));
  const removed = new Set(content.removeUnheld(candidates.map((b) => b.digest)));
  return { removed: candidates.filter((b) => removed.has(b.digest)), records: dropped };
}

/** Every stored blob, with why it is kept, for `kiln du`. */
export async function blobUsage(content: ContentStore, liveLayers: () => Promise<ReadonlySet<string>>, held: ReadonlySet<Digest>): Promise<BlobUsage[]> {
  const stored = await content.list();
  const marks = markContent(await contentView(content, liveLayers, stored));
  return stored.map((b) => ({ ...b, reason: marks.reasons.get(b.digest) ?? '', held: held.has(b.digest) }));
}
