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
  /**
   * The file's name in the result: `http.filename`, else the URL path's last
   * segment, else `index`. Without `http.filename`, a response's
   * Content-Disposition name comes first (as in BuildKit).
   */
  readonly filename: string;
  /** Whether `http.filename` set the name (a response's Content-Disposition cannot change it). */
  readonly explicitFilename: boolean;
  /** `http.perm`, else 0600 (also for `0`, as BuildKit, where 0 means unset). */
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
    explicitFilename: attrs['http.filename'] !== undefined,
    perm: perm === undefined ? DEFAULT_PERM : Number.parseInt(perm, 8) || DEFAULT_PERM,
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
 * cannot be a file name (see fileNameOrUndefined; bad escapes).
 */
export function defaultFilename(url: URL): string {
  const last = url.pathname.slice(url.pathname.lastIndexOf('/') + 1);
  let name: string;
  try {
    name = decodeURIComponent(last);
  } catch {
    return 'index';
  }
  return fileNameOrUndefined(name) ?? 'index';
}

/**
 * `name` when it can name the fetched file: not empty, `.` or `..`, no `/`,
 * and no control character (NUL, a newline: BuildKit falls back to its
 * default name for those too).
 */
export function fileNameOrUndefined(name: string): string | undefined {
  return name === '' || name === '.' || name === '..' || name.includes('/') || /[\x00-\x1f\x7f]/.test(name) ? undefined : name;
}

/**
 * The file name a Content-Disposition header suggests (`filename*=UTF-8''...`
 * before `filename="..."`), its last path segment; undefined when it gives
 * none that can be a file name. BuildKit names the file so when the op sets
 * no `http.filename`.
 */
export function contentDispositionFilename(header: string): string | undefined {
  const params = new Map<string, string>();
  // type; name=token; name="quoted \" string"
  const PARAM = /;\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))/g;
  for (const match of header.matchAll(PARAM)) {
    const name = (match[1] as string).toLowerCase();
    if (!params.has(name)) params.set(name, match[2] === undefined ? (match[3] ?? '') : match[2].replace(/\\(.)/g, '$1'));
  }
  const extended = params.get('filename*');
  let name = extended === undefined ? undefined : decodeExtended(extended);
  name ??= params.get('filename');
  if (name === undefined || name.endsWith('/')) return undefined;
  return fileNameOrUndefined(name.slice(name.lastIndexOf('/') + 1).trim());
}

/** An RFC 8187 value, `UTF-8'LANG'percent-encoded`; undefined when it is not one kiln can read. */
function decodeExtended(value: string): string | undefined {
  const match = /^([^']*)'[^']*'(.*)$/.exec(value);
  if (match === null || !['utf-8', 'us-ascii', 'iso-8859-1'].includes((match[1] as string).toLowerCase())) return undefined;
  try {
    const text = match[2] as string;
    // ISO-8859-1's code points are its bytes.
    return (match[1] as string).toLowerCase() === 'utf-8' ? decodeURIComponent(text) : text.replace(/%([0-9A-Fa-f]{2})/g, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
  } catch {
    return undefined;
  }
}
