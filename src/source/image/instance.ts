/**
 * What `docker-image://` and `oci-layout://` sources share once their image
 * is found: the key is the platform manifest's digest, found while keying
 * (so a cached build of a pinned or already-resolved image never unpacks
 * anything); the snapshot unpacks the layers, reusing every layer snapshot
 * this root already has.
 */
import { type CacheKey, digestOf } from '../../digest.js';
import type { SourceInstance, SourceOpOf } from '../types.js';
import type { ImageContext, ResolvedImage } from './types.js';

/** The instance of an image source op whose image `find` resolves (called once per solve). */
export function imageInstance(op: SourceOpOf, content: ImageContext['content'], find: (signal: AbortSignal) => Promise<ResolvedImage>): SourceInstance {
  // `image.layerlimit` (validated by the loader): only the first N layers.
  const limitText = op.body.source.attrs['image.layerlimit'];
  const layerLimit = limitText === undefined ? undefined : Number(limitText);
  // Resolved once per solve, shared by keying, running and image outputs (for `image.base`).
  let resolved: Promise<ResolvedImage> | undefined;
  const image = (signal: AbortSignal): Promise<ResolvedImage> => (resolved ??= find(signal));
  return {
    image,
    async cacheKey(signal) {
      const found = await image(signal);
      return digestOf({ source: 'image', manifest: found.descriptor.digest, layerLimit }) as string as CacheKey;
    },
    async snapshot(cache, signal, progress) {
      const found = await image(signal);
      const { unpackImage } = await import('./unpack.js');
      const unpack = { cache, content, image: found, signal, progress, vertex: op.digest };
      return unpackImage(layerLimit === undefined ? unpack : { ...unpack, layerLimit });
    },
  };
}
