/**
 * Source ops. A source's cache key is its content: for `local://NAME` the
 * checksum of the selected files (with a metadata fast path, so an unchanged
 * directory is re-stat'ed, not re-read). Other schemes arrive with their own
 * issues and fail with a clear error until then.
 */
import { stat } from 'node:fs/promises';
import type { ResultRef } from '../cache/types.js';
import { type CacheKey, digestOf } from '../digest.js';
import { ERROR_CODES, KilnError, OpError } from '../errors.js';
import { opDisplayName } from '../llb/op-name.js';
import type { Op } from '../llb/types.js';
import type { SolverOp } from '../solver/types.js';
import { checksumLocal } from '../source/local/checksum.js';
import { parseLocalSelection } from '../source/local/selection.js';
import type { ImageContext, ResolvedImage } from '../source/image/types.js';
import type { OpContext } from './types.js';

/** The solver op of a `source` op. */
export function sourceOp(op: Op & { body: { kind: 'source' } }, ctx: OpContext): SolverOp<ResultRef> {
  const { identifier, attrs } = op.body.source;
  const scheme = identifier.slice(0, identifier.indexOf('://'));
  if (scheme === 'local') return localSourceOp(op, identifier.slice('local://'.length), attrs, ctx);
  if (scheme === 'docker-image' || scheme === 'oci-layout') return imageSourceOp(op, ctx);
  const unsupported = (): never => {
    throw new OpError(ERROR_CODES.UNSUPPORTED_SOURCE, `${scheme}:// sources are not supported yet by this version of kiln (${identifier})`, {
      op: op.name,
      field: `ops.${op.name}.source.identifier`,
    });
  };
  return { cacheKey: async () => unsupported(), run: async () => unsupported() };
}

function localSourceOp(op: Op, name: string, attrs: Readonly<Record<string, string>>, ctx: OpContext): SolverOp<ResultRef> {
  const selection = parseLocalSelection(attrs);
  const field = `ops.${op.name}.source.identifier`;
  const dir = (): string => {
    const bound = ctx.locals.get(name);
    if (bound === undefined) {
      throw new OpError(ERROR_CODES.LOCAL_SOURCE, `local source "${name}" is not bound: pass --local ${name}=DIR`, { op: op.name, field });
    }
    return bound;
  };
  return {
    cacheKey: async ({ signal, progress }) => {
      const root = dir();
      const info = await stat(root).catch(() => undefined);
      if (info === undefined || !info.isDirectory()) {
        throw new OpError(ERROR_CODES.LOCAL_SOURCE, `local source "${name}": ${root} is not a directory`, { op: op.name, field });
      }
      const started = new Date().toISOString();
      const sum = await checksumLocal(root, selection, {
        name,
        ...(ctx.localHashes === undefined ? {} : { hashCache: ctx.localHashes }),
        signal,
        onProgress: (current, total) =>
          progress.emit({ type: 'status', vertex: op.digest, id: 'hashing files', current, ...(total === undefined ? {} : { total }), started }),
      });
      return digestOf({ source: 'local', content: sum.digest }) as string as CacheKey;
    },
    run: async (_inputs, { signal }) => {
      const mutable = await ctx.worker.cache.newMutable(null, { description: opDisplayName(op) });
      try {
        {
          const { copyLocal } = await import('../source/local/ingest.js');
          await using target = await mutable.mount();
          await copyLocal(dir(), selection, target.path, { signal, name });
        }
        return [await mutable.commit()];
      } catch (err) {
        await mutable.release();
        if (err instanceof KilnError) throw err;
        throw new OpError(ERROR_CODES.LOCAL_SOURCE, `local source "${name}": ${err instanceof Error ? err.message : String(err)}`, { op: op.name, field, cause: err });
      }
    },
  };
}

/**
 * `docker-image://` and `oci-layout://` sources. The key is the platform
 * manifest's digest, found while keying (so a cached build of a pinned or
 * already-resolved image never unpacks anything); the run unpacks the
 * layers, reusing every layer snapshot this root already has.
 */
function imageSourceOp(op: Op & { body: { kind: 'source' } }, ctx: OpContext): SolverOp<ResultRef> {
  const images = (): ImageContext => {
    if (ctx.images === undefined) throw new KilnError(ERROR_CODES.INTERNAL, 'image sources need an image context');
    return ctx.images;
  };
  // `image.layerlimit` (validated by the loader): only the first N layers.
  const limitText = op.body.source.attrs['image.layerlimit'];
  const layerLimit = limitText === undefined ? undefined : Number(limitText);
  // Resolved once per build, shared by keying, running and the image exporter (for `image.base`).
  const resolve = async (signal: AbortSignal): Promise<ResolvedImage> => {
    const { resolved } = images();
    let image = resolved.get(op.name);
    if (image === undefined) {
      const { resolveImageSource } = await import('../source/image/source.js');
      image = resolveImageSource(op, images(), signal);
      resolved.set(op.name, image);
    }
    return image;
  };
  return {
    cacheKey: async ({ signal }) => {
      const image = await resolve(signal);
      return digestOf({ source: 'image', manifest: image.descriptor.digest, layerLimit }) as string as CacheKey;
    },
    run: async (_inputs, { signal, progress }) => {
      const image = await resolve(signal);
      const { unpackImage } = await import('../source/image/unpack.js');
      const unpack = { cache: ctx.worker.cache, content: images().content, image, signal, progress, vertex: op.digest };
      return [await unpackImage(layerLimit === undefined ? unpack : { ...unpack, layerLimit })];
    },
  };
}
