/** Resolution of an image source op, whichever scheme it uses. */
import { importLayoutBlob, resolveOciLayout } from '../../content/oci-layout.js';
import type { Op } from '../../llb/types.js';
import { imagePlatform, resolveDockerImage, resolveModeOf } from './resolve.js';
import { parseOciLayoutIdentifier, unboundLayoutError } from './oci-layout-id.js';
import type { ImageContext, ResolvedImage } from './types.js';

/** Resolves a `docker-image://` or `oci-layout://` source op to its platform manifest. */
export async function resolveImageSource(op: Op & { body: { kind: 'source' } }, images: ImageContext, signal: AbortSignal): Promise<ResolvedImage> {
  const { identifier, attrs } = op.body.source;
  const site = { op: op.name, field: `ops.${op.name}.source.identifier` };
  const platform = imagePlatform(op.platform);
  if (identifier.startsWith('docker-image://')) {
    const mode = resolveModeOf(attrs, site);
    return resolveDockerImage({ text: identifier.slice('docker-image://'.length), mode, platform, images, signal, site });
  }
  const rest = identifier.slice('oci-layout://'.length);
  const selector = parseOciLayoutIdentifier(rest, site);
  const dir = images.ociLayouts.get(selector.name);
  if (dir === undefined) throw unboundLayoutError(op.name, selector.name);
  const found = await resolveOciLayout(dir, { ...(selector.tag === undefined ? {} : { tag: selector.tag }), ...(selector.digest === undefined ? {} : { digest: selector.digest }) }, platform, images.content, signal);
  return {
    ...found,
    name: `oci-layout://${rest}`,
    fetchLayer: (layer, layerSignal) => importLayoutBlob(dir, layer, images.content, layerSignal),
  };
}
