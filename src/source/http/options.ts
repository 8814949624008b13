/**
 * What an `http://` or `https://` source op asks for, from its identifier
 * and attrs (whose shapes the loader checked): the URL, the file's name,
 * mode and owner, the checksum it must have, the headers to send and the
 * secret whose value is the Authorization header.
 */
import type { Digest } from '../../digest.js';

/** The prefix of the attrs that add a request header (`http.header.NAME`). */
export const HEADER_ATTR_PREFIX = 'http.header.';

/** The mode of the fetched file when `http.perm` is not given (as BuildKit's default). */
export const DEFAULT_PERM = 0o600;

/** One HTTP source op, parsed. */
export interface HttpSourceOptions {
  readonly url: URL;
  /** `http.checksum`: the sha256 digest the content must have. */
  readonly checksum?: Digest;
  /** The file's name in the result (`http.filename`, else the URL path's last segment, else `index`). */
  readonly filename: string;
  /** `http.perm`, else 0600. */
  readonly perm: number;
  /** `http.uid` / `http.gid`: the file's owner; unset leaves what the process creates (root's 0:0). */
  readonly uid?: number;
  readonly gid?: number;
  /** `http.header.NAME` attrs: header name (lower case) to value. */
  readonly headers: Readonly<Record<string, string>>;
  /** `http.authheadersecret`: the id of the build secret sent as the Authorization header. */
  readonly authHeaderSecret?: string;
}

/** Parses a checked HTTP source op's identifier and attrs. */
export function parseHttpSource(identifier: string, attrs: Readonly<Record<string, string>>): HttpSourceOptions {
  const url = new URL(identifier);
  const perm = attrs['http.perm'];
  const uid = attrs['http.uid'];
  const gid = attrs['http.gid'];
  const checksum = attrs['http.checksum'];
  const secret = attrs['http.authheadersecret'];
  const headers: Record<string, string> = {};
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith(HEADER_ATTR_PREFIX)) headers[key.slice(HEADER_ATTR_PREFIX.length).toLowerCase()] = value;
  }
  return {
    url,
    filename: attrs['http.filename'] ?? defaultFilename(url),
    perm: perm === undefined ? DEFAULT_PERM : Number.parseInt(perm, 8),
    headers,
    ...(checksum === undefined ? {} : { checksum: checksum as Digest }),
    ...(uid === undefined ? {} : { uid: Number(uid) }),
    ...(gid === undefined ? {} : { gid: Number(gid) }),
    ...(secret === undefined ? {} : { authHeaderSecret: secret }),
  };
}

/**
 * The file name a URL gives: its path's last segment, percent-decoded;
 * `index` when that is empty (`https://host/`, `https://host/dir/`) or
 * cannot be a file name (`.`, `..`, a decoded `/` or NUL, bad escapes).
 */
export function defaultFilename(url: URL): string {
  const last = url.pathname.slice(url.pathname.lastIndexOf('/') + 1);
  let name: string;
  try {
    name = decodeURIComponent(last);
  } catch {
    return 'index';
  }
  return name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0') ? 'index' : name;
}
