/** The names an image output's `name` attribute gives (`type=image`, `oci`, `docker`). */
import { type ImageReference, parseReference } from '../content/reference.js';
import { ERROR_CODES, KilnError } from '../errors.js';

/**
 * The references an image output's `name` holds: one, or several separated
 * by commas (`name=reg/app:1.2,reg/app:latest`), as buildctl's outputs take
 * them. Empty entries are dropped.
 */
export function imageNames(name: string): string[] {
  return name
    .split(',')
    .map((n) => n.trim())
    .filter((n) => n !== '');
}

/** The references of an output's `name` (see imageNames); a bad one is a usage error naming it. */
export function parseNames(name: string): ImageReference[] {
  const names = imageNames(name);
  if (names.length === 0) throw new KilnError(ERROR_CODES.USAGE, `image name "${name}": no reference in it`);
  return names.map((one) => {
    try {
      return parseReference(one);
    } catch (err) {
      throw new KilnError(ERROR_CODES.USAGE, `image name "${one}": ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
  });
}
