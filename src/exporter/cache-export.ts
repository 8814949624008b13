/**
 * `--export-cache`: the build's results as a cache artifact
 * (content/cache-format.ts) in a registry or a directory. The layers are
 * the blobs image outputs use (image-layers.ts): a layer already compressed
 * for an image, or by an earlier export, is not compressed again, and one
 * the registry has (or can mount from the image pushed by this build, or
 * from its base) is not uploaded again. New layers are compressed two at a
 * time (each on zlib's pool already); a registry gets each new layer's
 * bytes while it compresses (a streamed upload beside the store write), and
 * every other blob as soon as it is ready, a few at once. Layers stream from
 * snapshot to compressor to store and registry, never held in memory.
 */
import pLimit from 'p-limit';
import { type CacheLayer, type CacheRecord, cacheManifest, CACHE_MEDIA_TYPES } from '../content/cache-format.js';
import type { CacheTarget } from '../content/cache-target.js';
import { getLayerBlobs } from '../content/layer-blobs.js';
import type { ImageReference } from '../content/reference.js';
import type { StreamedUpload } from '../content/registry/client.js';
import type { Descriptor } from '../content/types.js';
import type { Digest } from '../digest.js';
import type { SnapshotLayer } from '../snapshot/types.js';
import { blobBytes, describeMounts } from './cache-mount-export.js';
import { layerBlob } from './image-layers.js';
import type { CacheMountSource, CacheRecordSource, ExportContext, ImageFormat } from './types.js';

export type { CacheExportSpec, CacheMode, CacheRecordSource } from './types.js';

/** What a cache export wrote. */
export interface CacheExported {
  /** The manifest's descriptor. */
  readonly descriptor: Descriptor;
  readonly records: number;
  readonly layers: number;
  /** Cache mounts carried. */
  readonly mounts: number;
}

/** Compressions at once: each already keeps zlib's pool busy, so two only overlap one's tail with the next's start. */
const COMPRESSIONS = 2;
/** Uploads at once. */
const UPLOADS = 4;
/** Compressed bytes after which a new layer is streamed to the registry while it compresses; smaller ones are pushed after. */
const STREAM_AFTER = 1024 * 1024;

/** Writes `records` to `target` as one cache artifact. */
export async function exportCache(
  records: readonly CacheRecordSource[],
  target: CacheTarget,
  options: { readonly format: ImageFormat; readonly mountFrom?: ImageReference; readonly mounts?: readonly CacheMountSource[] },
  ctx: ExportContext,
): Promise<CacheExported> {
  const { signal } = ctx;
  const mounts = options.mounts ?? [];
  // Every distinct snapshot layer, in first-use order, and each output's chain over them (the records', then the cache mounts').
  const snapshotLayers = new Map<string, SnapshotLayer>();
  const chains: (readonly string[] | null)[][] = [];
  for (const refs of [...records.map((r) => r.outputs), ...mounts.map((m) => [m.ref])]) {
    const outputs: (readonly string[] | null)[] = [];
    for (const ref of refs) {
      if (ref === null) {
        outputs.push(null);
        continue;
      }
      const layers = await ref.layers();
      for (const layer of layers) if (!snapshotLayers.has(layer.id)) snapshotLayers.set(layer.id, layer);
      outputs.push(layers.map((l) => l.id));
    }
    chains.push(outputs);
  }

  const { format } = options;
  const compress = pLimit(COMPRESSIONS);
  const upload = pLimit(UPLOADS);
  const uploads = new Map<Digest, Promise<unknown>>();
  const total = snapshotLayers.size + 1;
  let compressed = 0;
  let pushed = 0;
  let bytes = 0;
  let totalBytes = 0;
  const push = (desc: Descriptor): Promise<unknown> => {
    let started = uploads.get(desc.digest);
    if (started === undefined) {
      totalBytes += desc.size;
      started = upload(async () => {
        await target.pushBlob(desc, signal, options.mountFrom);
        ctx.report('blobs pushed', ++pushed, { total });
        ctx.report('bytes pushed', (bytes += desc.size), { total: totalBytes });
      });
      uploads.set(desc.digest, started);
    }
    return started;
  };
  const blobs = new Map<string, CacheLayer>();
  const tasks = [...snapshotLayers.values()].map((layer) =>
    compress(async () => {
      const streamed = streamedUpload(target, signal);
      let blob;
      try {
        blob = await layerBlob(layer, format, ctx, streamed?.onChunk);
      } catch (err) {
        streamed?.abort();
        throw err;
      }
      if (blob.exported) ctx.report('layers compressed', ++compressed);
      // A new layer went to the registry while it compressed: closed under its digest, it needs no push.
      if (streamed !== undefined && (uploads.has(blob.descriptor.digest) || !(await streamed.finish(blob.descriptor.digest)))) streamed.abort();
      else if (streamed !== undefined) {
        totalBytes += blob.descriptor.size;
        uploads.set(blob.descriptor.digest, Promise.resolve());
        ctx.report('blobs pushed', ++pushed, { total });
        ctx.report('bytes pushed', (bytes += blob.descriptor.size), { total: totalBytes });
      }
      // The variant the blob is recorded under: the import records it the same way.
      const known = getLayerBlobs(ctx.content.records.layerBlobs, layer.id);
      const variant = Object.entries(known?.blobs ?? {}).find(([, d]) => d.digest === blob.descriptor.digest)?.[0];
      blobs.set(layer.id, {
        digest: blob.descriptor.digest,
        size: blob.descriptor.size,
        mediaType: blob.descriptor.mediaType,
        diffID: blob.diffID,
        ...(variant === undefined ? {} : { variant }),
      });
      // Not awaited here: the next compression starts while this blob uploads.
      void push(blob.descriptor).catch(() => undefined);
    }),
  );
  await settleAll(tasks);
  ctx.report('layers compressed', compressed, { done: true });
  await settleAll([...uploads.values()]);

  // The description: distinct blobs in first-use order, each record's chains as indexes into them.
  const layers: CacheLayer[] = [];
  const indexOf = new Map<Digest, number>();
  for (const blob of blobs.values()) {
    if (indexOf.has(blob.digest)) continue;
    indexOf.set(blob.digest, layers.length);
    layers.push(blob);
  }
  const index = (id: string): number => indexOf.get((blobs.get(id) as CacheLayer).digest) as number;
  const created = new Date().toISOString();
  const described: CacheRecord[] = records.map((record, i) => {
    const outputs = (chains[i] ?? []).map((chain) => (chain === null ? null : chain.map(index)));
    return { key: record.key, op: record.op, created, size: blobBytes(outputs, layers), outputs };
  });
  const mountRecords = describeMounts(mounts, chains.slice(records.length), { index, layers, created });
  const description = { version: 1 as const, layers, records: described, ...(mountRecords.length === 0 ? {} : { mounts: mountRecords }) };
  const configBlob = await ctx.content.writeJson(description);
  const config: Descriptor = { mediaType: CACHE_MEDIA_TYPES.config, digest: configBlob.digest, size: configBlob.size };
  await push(config);
  await settleAll([...uploads.values()]);
  const manifestBlob = await ctx.content.writeJson(cacheManifest(config, description));
  await target.pushManifest(manifestBlob.bytes, signal);
  ctx.report('blobs pushed', pushed, { total, done: true });
  ctx.report('bytes pushed', bytes, { total: totalBytes, done: true });
  return {
    descriptor: { mediaType: cacheManifest(config, description).mediaType as string, digest: manifestBlob.digest, size: manifestBlob.size },
    records: described.length,
    layers: layers.length,
    mounts: mountRecords.length,
  };
}

/**
 * A streamed upload of one layer's bytes to `target` as they are made, for
 * targets that take one. It is only a head start: when anything about it
 * fails, `finish` says false and the blob is pushed from the store as usual.
 */
function streamedUpload(
  target: CacheTarget,
  signal: AbortSignal,
): { onChunk(chunk: Buffer): Promise<void>; finish(digest: Digest): Promise<boolean>; abort(): void } | undefined {
  if (target.startUpload === undefined) return undefined;
  const start = target.startUpload.bind(target);
  let upload: Promise<StreamedUpload> | undefined;
  // The first bytes wait here: a layer that ends within STREAM_AFTER is pushed as usual, off the compression slot.
  let held: Buffer[] | undefined = [];
  let heldBytes = 0;
  let failed = false;
  const abort = (): void => {
    failed = true;
    // Nothing to drop when the session never opened.
    void upload?.then((u) => u.abort(), () => undefined);
  };
  return {
    async onChunk(chunk) {
      if (failed) return;
      if (held !== undefined) {
        held.push(chunk);
        heldBytes += chunk.length;
        if (heldBytes < STREAM_AFTER) return;
      }
      try {
        const opened = await (upload ??= start(signal));
        const chunks = held ?? [chunk];
        held = undefined;
        for (const c of chunks) await opened.write(c);
      } catch {
        abort();
      }
    },
    async finish(digest) {
      if (failed || upload === undefined) return false;
      try {
        await (await upload).finish(digest);
        return true;
      } catch {
        return false;
      }
    },
    abort,
  };
}

/** Waits for every task, then throws the first failure (none is left running behind a rejection). */
async function settleAll(tasks: readonly Promise<unknown>[]): Promise<void> {
  const results = await Promise.allSettled(tasks);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
}
