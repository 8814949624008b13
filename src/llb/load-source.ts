/**
 * Validation of source ops: the identifier's scheme, what must follow it, and
 * which attrs each scheme accepts (an unknown attr is a typo that would
 * otherwise be silently ignored by the source).
 */
import { type Checker, didYouMean, fieldPath, fieldsOf, idProblem, joinOr, parseOctalMode } from './check.js';
import { GIT_SCHEMES, isGitSpecProblem, parseGitSource } from './git-identifier.js';
import type { RawSource } from './json-types.js';
import { maskUrlCredentials } from './op-name.js';
import type { SourceOp } from './types.js';

/** Checks one attr value (`key` is the attr's full name); returns what is wrong with it, or undefined. */
type AttrCheck = (value: string, key: string) => string | undefined;

const anyString: AttrCheck = () => undefined;

const nonEmpty: AttrCheck = (value) => (value === '' ? 'must not be empty' : undefined);

function oneOf(...allowed: string[]): AttrCheck {
  return (value) => (allowed.includes(value) ? undefined : `must be ${joinOr(allowed.map((a) => `"${a}"`))}`);
}

const uintString: AttrCheck = (value) =>
  /^\d+$/.test(value) ? undefined : 'must be a non-negative integer written as a string, such as "1000"';

// Pattern lists travel as strings (attrs are a string map), so their JSON is checked here.
const jsonStringArray: AttrCheck = (value) => {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    parsed = undefined;
  }
  return Array.isArray(parsed) && parsed.every((s) => typeof s === 'string')
    ? undefined
    : 'must be a JSON array of strings written as a string, such as "[\\"*.tmp\\"]"';
};

const IMAGE_ATTRS = {
  'image.resolvemode': oneOf('default', 'pull', 'local'),
  'image.recordtype': anyString,
  'image.layerlimit': uintString,
};
const OCI_LAYOUT_ATTRS = { 'oci.session': anyString, 'oci.store': anyString, 'image.recordtype': anyString };
const LOCAL_ATTRS = {
  'local.includepattern': jsonStringArray,
  'local.includepatterns': jsonStringArray,
  'local.excludepatterns': jsonStringArray,
  'local.followpaths': jsonStringArray,
  'local.sharedkeyhint': anyString,
  'local.unique': anyString,
  // The client session that serves the directory in buildkitd; kiln binds it with --local instead.
  'local.session': anyString,
  'local.differ': oneOf('none', 'metadata'),
};
// An HTTP header name is a token (RFC 9110, 5.1); a value may not break the header block.
const HTTP_TOKEN_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const HTTP_HEADER_PREFIX = 'http.header.';
const httpHeader: AttrCheck = (value, key) => {
  if (!HTTP_TOKEN_RE.test(key.slice(HTTP_HEADER_PREFIX.length))) return `"${key}" must name a header: http.header.NAME, NAME a header name such as X-Api-Version`;
  return /[\r\n\0]/.test(value) ? 'must be one line: a header value without CR, LF or NUL' : undefined;
};
const HTTP_ATTRS = {
  'http.checksum': (value: string) => (/^sha256:[0-9a-f]{64}$/.test(value) ? undefined : 'must be sha256:<64 lowercase hex digits>'),
  'http.filename': (value: string) =>
    value !== '' && value !== '.' && value !== '..' && !value.includes('/') && !/[\x00-\x1f\x7f]/.test(value)
      ? undefined
      : 'must be a file name without "/" or control characters (not "." or "..")',
  'http.perm': (value: string) => (parseOctalMode(value) !== undefined ? undefined : 'must be an octal mode such as "0644"'),
  'http.uid': idProblem,
  'http.gid': idProblem,
  'http.authheadersecret': (value: string) => (value !== '' ? undefined : 'must be the id of a build secret (--secret id=ID,...)'),
  [`${HTTP_HEADER_PREFIX}*`]: httpHeader,
};
// git.fullurl is checked with the identifier (parseGitSource): the two make one remote.
const GIT_ATTRS = {
  'git.keepgitdir': oneOf('true', 'false'),
  'git.fullurl': anyString,
  'git.authtokensecret': nonEmpty,
  'git.authheadersecret': nonEmpty,
  'git.knownsshhosts': nonEmpty,
  'git.mountsshsock': nonEmpty,
  // BuildKit v0.24's: a hex prefix of the commit the ref must resolve to, and whether to leave submodules out.
  'git.checksum': (value: string) => (/^[0-9a-fA-F]{1,64}$/.test(value) ? undefined : 'must be a commit id or a prefix of one, in hex'),
  'git.skipsubmodules': oneOf('true', 'false'),
};

/** The attrs each identifier scheme accepts. A Map, so scheme names never hit Object.prototype. */
const ATTRS_BY_SCHEME: ReadonlyMap<string, Readonly<Record<string, AttrCheck>>> = new Map<string, Readonly<Record<string, AttrCheck>>>([
  ['docker-image', IMAGE_ATTRS],
  ['oci-layout', OCI_LAYOUT_ATTRS],
  ['local', LOCAL_ATTRS],
  ['http', HTTP_ATTRS],
  ['https', HTTP_ATTRS],
  ['git', GIT_ATTRS],
  ['git+https', GIT_ATTRS],
  ['git+file', GIT_ATTRS],
]);

const SOURCE_FIELDS = fieldsOf<RawSource>({ identifier: true, attrs: true });
const SCHEME_RE = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/(.*)$/s;
const OCI_LAYOUT_REF_RE = /^[^\s@]+(@sha256:[0-9a-f]{64}|:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$/;

/** The check of a family of attrs (`http.header.*`) that `key` belongs to, if any. */
function prefixCheck(known: Readonly<Record<string, AttrCheck>>, key: string): AttrCheck | undefined {
  for (const [name, check] of Object.entries(known)) {
    if (name.endsWith('.*') && key.startsWith(name.slice(0, -1)) && key.length > name.length - 1) return check;
  }
  return undefined;
}

/** What is wrong with the part of an identifier after `scheme://`, or undefined. */
function checkRest(scheme: string, rest: string, identifier: string): string | undefined {
  if (rest === '') {
    return scheme === 'local' ? 'local:// needs a name: local://NAME, bound at build time with --local NAME=DIR' : `nothing follows "${scheme}://"`;
  }
  if (scheme === 'oci-layout' && !OCI_LAYOUT_REF_RE.test(rest)) {
    return 'expected oci-layout://NAME:TAG or oci-layout://NAME@sha256:<digest>';
  }
  if ((scheme === 'http' || scheme === 'https') && !URL.canParse(identifier)) return `"${maskUrlCredentials(identifier)}" is not a valid URL`;
  return undefined;
}

/** Validates a `source` body. */
export function loadSource(c: Checker, value: unknown, path: string): SourceOp | undefined {
  const f = c.object(value, path, SOURCE_FIELDS);
  if (f === undefined) return undefined;
  const identifier = f.text('identifier', true);
  const attrs = f.stringMap('attrs') ?? {};
  if (identifier === undefined) return undefined;

  const match = SCHEME_RE.exec(identifier);
  const scheme = match?.[1] ?? '';
  const known = ATTRS_BY_SCHEME.get(scheme);
  if (match === null || known === undefined) {
    const schemes = [...ATTRS_BY_SCHEME.keys()].map((s) => `${s}://`);
    c.report(f.at('identifier'), `unsupported source "${maskUrlCredentials(identifier)}": the identifier must start with ${joinOr(schemes)}`);
    return undefined;
  }
  const problem = checkRest(scheme, match[2] ?? '', identifier);
  if (problem !== undefined) c.report(f.at('identifier'), problem);
  else if ((GIT_SCHEMES as readonly string[]).includes(scheme)) {
    const git = parseGitSource(identifier, Object.hasOwn(attrs, 'git.fullurl') ? attrs['git.fullurl'] : undefined);
    if (isGitSpecProblem(git)) c.report(git.field === 'identifier' ? f.at('identifier') : fieldPath(f.at('attrs'), git.field), git.message);
  }

  for (const [key, attrValue] of Object.entries(attrs)) {
    const attrPath = fieldPath(f.at('attrs'), key);
    const check = Object.hasOwn(known, key) ? known[key] : prefixCheck(known, key);
    if (check === undefined) {
      const names = Object.keys(known).map((name) => (name.endsWith('.*') ? `${name.slice(0, -1)}NAME` : name));
      const hint = didYouMean(key, names) || ` (known: ${names.join(', ')})`;
      c.report(attrPath, `unknown attr "${key}" for ${scheme}:// sources${hint}`);
      continue;
    }
    const attrProblem = check(attrValue, key);
    // As JSON: a value with a newline must not break the message's one line.
    if (attrProblem !== undefined) c.report(attrPath, `${attrProblem}, got ${JSON.stringify(attrValue)}`);
  }
  return { identifier, attrs };
}
