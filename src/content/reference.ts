/**
 * Image references, normalised the way Docker does it, so that a name means
 * the same image in kiln as in `docker pull`: `busybox` is
 * `docker.io/library/busybox:latest`, `me/app` is `docker.io/me/app:latest`,
 * and a first component is a registry host only when it looks like one
 * (holds a `.` or a `:`, is `localhost`, or has capitals, which no
 * repository may).
 */
import { type Digest, isDigest } from '../digest.js';
import { ERROR_CODES, KilnError } from '../errors.js';

/** A fully qualified image reference. */
export interface ImageReference {
  /** The registry host, with its port when it has one: `docker.io`, `127.0.0.1:5000`, `ghcr.io`. */
  readonly domain: string;
  /** The repository path on that registry: `library/busybox`. */
  readonly repository: string;
  /** The tag; `latest` when the text named neither a tag nor a digest. */
  readonly tag?: string;
  /** The manifest digest; when given it wins over the tag. */
  readonly digest?: Digest;
}

/** Docker Hub's canonical name, and the legacy name users still write. */
const DOCKER_HUB = 'docker.io';
const DOCKER_HUB_LEGACY = 'index.docker.io';
/** Docker's limit on `domain/repository`. */
const NAME_MAX = 255;

// The grammar of distribution's reference package (its documented form; written out here).
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN_LABEL = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN = new RegExp(`^(?:${DOMAIN_LABEL}(?:\\.${DOMAIN_LABEL})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?$`);
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST_SHAPE = /^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$/;
const IMAGE_ID = /^[a-f0-9]{64}$/;

/** Parses `[DOMAIN/]PATH[:TAG][@DIGEST]` into a normalised reference. Throws E_IMAGE naming the text and the rule it breaks. */
export function parseReference(text: string): ImageReference {
  const bad = (why: string): KilnError => new KilnError(ERROR_CODES.IMAGE, `invalid image reference ${JSON.stringify(text)}: ${why}`);
  if (text === '') throw bad('it is empty');
  // A bare 64-hex string is an image ID in Docker's CLI; as a name it would be ambiguous.
  if (IMAGE_ID.test(text)) throw bad('a 64-character hex string is an image ID, not a name');

  let rest = text;
  let digest: Digest | undefined;
  const at = rest.indexOf('@');
  if (at !== -1) {
    const d = rest.slice(at + 1);
    if (!DIGEST_SHAPE.test(d)) throw bad(`"${d}" is not a digest (ALGORITHM:HEX)`);
    if (!isDigest(d)) throw bad(`"${d}" is not a sha256 digest (sha256: and 64 lowercase hex digits), the only kind kiln supports`);
    digest = d;
    rest = rest.slice(0, at);
  }
  // A tag's colon is the last one after the last slash; earlier colons belong to a port.
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    if (!TAG.test(tag)) throw bad(`"${tag}" is not a valid tag (letters, digits, '_', '.', '-'; at most 128; not starting with '.' or '-')`);
    rest = rest.slice(0, colon);
  }

  let domain = DOCKER_HUB;
  let repository = rest;
  const slash = rest.indexOf('/');
  if (slash !== -1) {
    const first = rest.slice(0, slash);
    if (first.includes('.') || first.includes(':') || first === 'localhost' || first !== first.toLowerCase()) {
      domain = first === DOCKER_HUB_LEGACY ? DOCKER_HUB : first;
      repository = rest.slice(slash + 1);
    }
  }
  if (!DOMAIN.test(domain)) throw bad(`"${domain}" is not a valid registry host`);
  if (repository === '') throw bad('the repository name is empty');
  if (repository !== repository.toLowerCase()) throw bad('repository names must be lowercase');
  for (const component of repository.split('/')) {
    if (!PATH_COMPONENT.test(component)) {
      throw bad(`"${component}" is not a valid path component (lowercase letters and digits, separated by '.', '_', '__' or '-')`);
    }
  }
  if (domain === DOCKER_HUB && !repository.includes('/')) repository = `library/${repository}`;
  if (domain.length + 1 + repository.length > NAME_MAX) throw bad(`the name is longer than ${NAME_MAX} characters`);

  if (tag === undefined && digest === undefined) tag = 'latest';
  return { domain, repository, ...(tag === undefined ? {} : { tag }), ...(digest === undefined ? {} : { digest }) };
}

/** The full text of a reference: `docker.io/library/busybox:latest`, `host:5000/a/b@sha256:...`. */
export function formatReference(ref: ImageReference): string {
  return `${ref.domain}/${ref.repository}${ref.tag === undefined ? '' : `:${ref.tag}`}${ref.digest === undefined ? '' : `@${ref.digest}`}`;
}
