/**
 * Validation of source ops: the identifier's scheme, what must follow it, and
 * which attrs each scheme accepts (an unknown attr is a typo that would
 * otherwise be silently ignored by the source).
 */
import { type Checker, didYouMean, fieldPath, fieldsOf, idProblem, joinOr, parseOctalMode } from './check.js';
import type { RawSource } from './json-types.js';
import type { SourceOp } from './types.js';

/** Checks one attr value; returns what is wrong with it, or undefined. */
type AttrCheck = (value: string) => string | undefined;

const anyString: AttrCheck = () => undefined;

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
const HTTP_ATTRS = {
  'http.checksum': (value: string) => (/^sha256:[0-9a-f]{64}$/.test(value) ? undefined : 'must be sha256:<64 lowercase hex digits>'),
  'http.filename': (value: string) => (value !== '' && !value.includes('/') ? undefined : 'must be a file name without "/"'),
  'http.perm': (value: string) => (parseOctalMode(value) !== undefined ? undefined : 'must be an octal mode such as "0644"'),
  'http.uid': idProblem,
  'http.gid': idProblem,
};
const GIT_ATTRS = {
  'git.keepgitdir': oneOf('true', 'false'),
  'git.fullurl': anyString,
  'git.authtokensecret': anyString,
  'git.authheadersecret': anyString,
  'git.knownsshhosts': anyString,
  'git.mountsshsock': anyString,
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

/** What is wrong with the part of an identifier after `scheme://`, or undefined. */
function checkRest(scheme: string, rest: string, identifier: string): string | undefined {
  if (rest === '') {
    return scheme === 'local' ? 'local:// needs a name: local://NAME, bound at build time with --local NAME=DIR' : `nothing follows "${scheme}://"`;
  }
  if (scheme === 'oci-layout' && !OCI_LAYOUT_REF_RE.test(rest)) {
    return 'expected oci-layout://NAME:TAG or oci-layout://NAME@sha256:<digest>';
  }
  if ((scheme === 'http' || scheme === 'https') && !URL.canParse(identifier)) return `"${identifier}" is not a valid URL`;
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
    c.report(f.at('identifier'), `unsupported source "${identifier}": the identifier must start with ${joinOr(schemes)}`);
    return undefined;
  }
  const problem = checkRest(scheme, match[2] ?? '', identifier);
  if (problem !== undefined) c.report(f.at('identifier'), problem);

  for (const [key, attrValue] of Object.entries(attrs)) {
    const attrPath = fieldPath(f.at('attrs'), key);
    const check = Object.hasOwn(known, key) ? known[key] : undefined;
    if (check === undefined) {
      const names = Object.keys(known);
      const hint = didYouMean(key, names) || ` (known: ${names.join(', ')})`;
      c.report(attrPath, `unknown attr "${key}" for ${scheme}:// sources${hint}`);
      continue;
    }
    const attrProblem = check(attrValue);
    if (attrProblem !== undefined) c.report(attrPath, `${attrProblem}, got "${attrValue}"`);
  }
  return { identifier, attrs };
}
