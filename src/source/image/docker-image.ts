/** `docker-image://REF`: an image from a registry, resolved for the op's platform. */
import { identifierRest, identifierSite, type Source } from '../types.js';
import { imageInstance } from './instance.js';

export const dockerImageSource: Source = {
  scheme: 'docker-image',
  // The loader checked the reference's shape and the attrs; nothing is bound.
  check: () => undefined,
  resolve(op, ctx) {
    return imageInstance(op, ctx.content, async (signal) => {
      const { imagePlatform, resolveDockerImage, resolveModeOf } = await import('./resolve.js');
      const site = identifierSite(op);
      const mode = resolveModeOf(op.body.source.attrs, site);
      return resolveDockerImage({ text: identifierRest(op), mode, platform: imagePlatform(op.platform), images: ctx, signal, site });
    });
  },
};
