/**
 * `oci-layout://` identifiers, kept apart from the rest of the image code:
 * the source's check runs before anything else, and must not load registry
 * or layer code.
 */
import { type Digest, isDigest } from '../../digest.js';
import { ERROR_CODES, KilnError } from '../../errors.js';

/** Where a source op is, for errors. */
export interface SourceSite {
  readonly op: string;
  readonly field: string;
}

/** Parses the part after `oci-layout://`: `NAME@sha256:...` or `NAME[:TAG]` (tag latest). */
export function parseOciLayoutIdentifier(rest: string, site: SourceSite): { name: string; tag?: string; digest?: Digest } {
  const at = rest.indexOf('@');
  if (at >= 0) {
    const digest = rest.slice(at + 1);
    if (!isDigest(digest)) throw new KilnError(ERROR_CODES.IMAGE, `oci-layout://${rest}: "${digest}" is not a sha256 digest`, site);
    return { name: rest.slice(0, at), digest };
  }
  const colon = rest.lastIndexOf(':');
  return colon < 0 ? { name: rest, tag: 'latest' } : { name: rest.slice(0, colon), tag: rest.slice(colon + 1) };
}
