/**
 * What a git source op names: the remote to fetch, the ref and the subdir.
 * One parser for the loader (which reports what is wrong, with its field)
 * and the git source (which fetches what it returns).
 *
 * Identifiers: `git+https://HOST/PATH#REF[:SUBDIR]`, `git+file:///PATH#...`
 * and `git://HOST/PATH#...`. For `git://` the attr `git.fullurl` may hold the
 * URL actually fetched (`git://`, `http(s)://`, `ssh://`, `USER@HOST:PATH`,
 * `file://`); without it `git://` is the git protocol.
 */
import { maskUrlCredentials } from './op-name.js';

/** How git reaches the remote. */
export type GitTransport = 'git' | 'http' | 'ssh' | 'file';

/** A `user:password` taken out of a URL (sent as a Basic Authorization header, never in the URL). */
export interface GitUserinfo {
  readonly user: string;
  readonly password: string;
}

/** A parsed git source. */
export interface GitSourceSpec {
  /** The URL git fetches, without any password (a user name for ssh stays). */
  readonly url: string;
  readonly transport: GitTransport;
  /** Credentials the URL carried, for http(s) only. */
  readonly userinfo?: GitUserinfo;
  /** The ref after `#`: a branch, tag, `refs/...` name or full commit; undefined means the remote's HEAD. */
  readonly ref?: string;
  /** The directory after `#REF:`, without leading or trailing slashes; undefined for the whole tree. */
  readonly subdir?: string;
}

/** Which field a problem is in. */
export type GitSpecField = 'identifier' | 'git.fullurl';

/** What is wrong with a git source, and in which field. */
export interface GitSpecProblem {
  readonly field: GitSpecField;
  readonly message: string;
}

/** The identifier schemes that are git sources. */
export const GIT_SCHEMES = ['git', 'git+https', 'git+file'] as const;

const SCP_LIKE_RE = /^(?:([^@/:\s]+)@)?([^@/:\s[\]]+|\[[0-9A-Fa-f:.]+\]):(?!\/\/)(.+)$/;
const FULL_COMMIT_RE = /^[0-9a-f]{40}$|^[0-9a-f]{64}$/;

/** Whether `ref` is a full commit id (sha1 or sha256 object names). */
export function isFullCommit(ref: string): boolean {
  return FULL_COMMIT_RE.test(ref);
}

/** What is wrong with a ref name, or undefined (git's own rules, roughly; a leading `-` would be read as an option). */
function refProblem(ref: string): string | undefined {
  if (ref === '') return 'the ref after "#" is empty';
  if (ref.startsWith('-') || ref.startsWith('/') || ref.endsWith('/') || ref.endsWith('.lock') || ref.endsWith('.')) return `"${ref}" is not a valid git ref`;
  if (/[\u0000-\u0020\u007f~^:?*[\\]|\.\.|@\{|\/\/|\/\./.test(ref)) return `"${ref}" is not a valid git ref`;
  return undefined;
}

/** The subdir without slashes at its ends, or what is wrong with it. */
function subdirOf(text: string): string | { problem: string } {
  const parts = text.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) return { problem: `subdir "${text}" must not contain ".."` };
  if (parts.length === 0) return { problem: `subdir "${text}" is empty` };
  return parts.join('/');
}

/** Splits `REST#REF[:SUBDIR]`. */
function splitFragment(rest: string): { base: string; ref?: string; subdir?: string } | GitSpecProblem {
  const hash = rest.indexOf('#');
  if (hash < 0) return { base: rest };
  const base = rest.slice(0, hash);
  const fragment = rest.slice(hash + 1);
  const colon = fragment.indexOf(':');
  const ref = colon < 0 ? fragment : fragment.slice(0, colon);
  const out: { base: string; ref?: string; subdir?: string } = { base };
  if (ref !== '') {
    const problem = refProblem(ref);
    if (problem !== undefined) return { field: 'identifier', message: problem };
    out.ref = ref;
  }
  if (colon >= 0) {
    const subdir = subdirOf(fragment.slice(colon + 1));
    if (typeof subdir !== 'string') return { field: 'identifier', message: subdir.problem };
    out.subdir = subdir;
  }
  return out;
}

/** A URL git can fetch, with its transport and any password taken out, or what is wrong. */
function remoteOf(text: string, field: GitSpecField): { url: string; transport: GitTransport; userinfo?: GitUserinfo } | GitSpecProblem {
  // git would read a leading "-" as an option.
  if (text.startsWith('-')) return { field, message: `"${maskUrlCredentials(text)}" must not start with "-"` };
  const scp = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(text) ? null : SCP_LIKE_RE.exec(text);
  if (scp !== null) {
    const host = scp[2] ?? '';
    if (host.startsWith('-')) return { field, message: `host "${host}" must not start with "-"` };
    return { url: text, transport: 'ssh' };
  }
  if (!URL.canParse(text)) return { field, message: `"${maskUrlCredentials(text)}" is not a URL git can fetch (expected git://, https://, ssh://, USER@HOST:PATH or file://)` };
  const url = new URL(text);
  const scheme = url.protocol.slice(0, -1);
  const transport: GitTransport | undefined =
    scheme === 'git' ? 'git' : scheme === 'http' || scheme === 'https' ? 'http' : scheme === 'ssh' ? 'ssh' : scheme === 'file' ? 'file' : undefined;
  if (transport === undefined) return { field, message: `${scheme}:// is not a git transport (expected git://, https://, http://, ssh:// or file://)` };
  if (transport !== 'file' && url.hostname === '') return { field, message: `"${maskUrlCredentials(text)}" has no host` };
  if (url.hostname.startsWith('-')) return { field, message: `host "${url.hostname}" must not start with "-"` };
  if (url.pathname === '' || url.pathname === '/') return { field, message: `"${maskUrlCredentials(text)}" names no repository path` };
  if (url.search !== '' || url.hash !== '') return { field, message: `"${maskUrlCredentials(text)}": a git URL takes no query or fragment here` };
  let userinfo: GitUserinfo | undefined;
  if (url.password !== '') {
    if (transport !== 'http') return { field, message: `a password in a ${scheme}:// URL is not supported: use --ssh` };
    userinfo = { user: decodeURIComponent(url.username), password: decodeURIComponent(url.password) };
    url.username = '';
    url.password = '';
  } else if (url.username !== '' && transport !== 'ssh') {
    return { field, message: `a user name in a ${scheme}:// URL is not supported here: use git.authheadersecret or git.authtokensecret` };
  }
  return { url: url.href, transport, ...(userinfo === undefined ? {} : { userinfo }) };
}

/**
 * Parses a git source op's identifier (whose scheme is one of
 * {@link GIT_SCHEMES}) and its `git.fullurl` attr.
 */
export function parseGitSource(identifier: string, fullUrl: string | undefined): GitSourceSpec | GitSpecProblem {
  const sep = identifier.indexOf('://');
  const scheme = identifier.slice(0, sep);
  const split = splitFragment(identifier.slice(sep + 3));
  if ('field' in split) return split;
  if (split.base === '') return { field: 'identifier', message: `nothing follows "${scheme}://"` };
  let remote;
  if (fullUrl !== undefined) {
    if (scheme !== 'git') return { field: 'git.fullurl', message: `git.fullurl is for git:// identifiers only; ${scheme}:// already names the URL` };
    remote = remoteOf(fullUrl, 'git.fullurl');
    if (!('field' in remote) && fullUrl.includes('#')) return { field: 'git.fullurl', message: 'the ref goes in the identifier (after "#"), not in git.fullurl' };
  } else {
    const inner = scheme === 'git+https' ? `https://${split.base}` : scheme === 'git+file' ? `file://${split.base}` : `git://${split.base}`;
    remote = remoteOf(inner, 'identifier');
  }
  if ('field' in remote) return remote;
  return { ...remote, ...(split.ref === undefined ? {} : { ref: split.ref }), ...(split.subdir === undefined ? {} : { subdir: split.subdir }) };
}

/** Whether a parse gave a problem. */
export function isGitSpecProblem(value: GitSourceSpec | GitSpecProblem): value is GitSpecProblem {
  return 'field' in value;
}
