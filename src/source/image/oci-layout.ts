/**
 * `oci-layout://NAME:TAG` and `oci-layout://NAME@sha256:...`: an image in an
 * OCI image layout directory the caller binds (`--oci-layout NAME=DIR`).
 */
import { ERROR_CODES } from '../../errors.js';
import { identifierRest, identifierSite, type Source, type SourceBindings, type SourceOpOf, UnboundSourceError } from '../types.js';
import { imageInstance } from './instance.js';
import { parseOciLayoutIdentifier } from './oci-layout-id.js';

/** The op's layout selector and the directory bound to its name. */
function boundLayout(op: SourceOpOf, bindings: SourceBindings): ReturnType<typeof parseOciLayoutIdentifier> & { dir: string } {
  const selector = parseOciLayoutIdentifier(identifierRest(op), identifierSite(op));
  const dir = bindings.ociLayouts.get(selector.name);
  if (dir === undefined) throw new UnboundSourceError({ op, code: ERROR_CODES.IMAGE, what: 'oci-layout', bindings: 'ociLayouts', binding: selector.name });
  return { ...selector, dir };
}

export const ociLayoutSource: Source = {
  scheme: 'oci-layout',
  check: (op, bindings) => void boundLayout(op, bindings),
  resolve(op, ctx) {
    return imageInstance(op, ctx.content, async (signal) => {
      const { dir, tag, digest } = boundLayout(op, ctx.bindings);
      const [{ importLayoutBlob, resolveOciLayout }, { imagePlatform }] = await Promise.all([import('../../content/oci-layout.js'), import('./resolve.js')]);
      const selector = { ...(tag === undefined ? {} : { tag }), ...(digest === undefined ? {} : { digest }) };
      const found = await resolveOciLayout(dir, selector, imagePlatform(op.platform), ctx.content, signal);
      return {
        ...found,
        name: op.body.source.identifier,
        fetchLayer: (layer, layerSignal) => importLayoutBlob(dir, layer, ctx.content, layerSignal),
      };
    });
  },
};
