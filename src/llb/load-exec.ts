/**
 * Validation of exec ops: the process (meta), each mount, and the rules that
 * tie the mounts together (one root, unique destinations, outputs numbered
 * without gaps), with every default filled in.
 *
 * Secret and ssh mounts are always read-only: `readonly` may be left out or be
 * true, and `false` is an error rather than silently ignored.
 */
import { isIP } from 'node:net';
import path from 'node:path';
import { assertNever } from '../errors.js';
import { type Checker, countOutputs, type Fields, fieldPath, fieldsOf, ID_RANGE, idProblem, indexPath, inputRangeHint, type Located, outputRange } from './check.js';
import type {
  RawCacheOpt,
  RawExec,
  RawExecMeta,
  RawExtraHost,
  RawMount,
  RawProxyEnv,
  RawSecretEnv,
  RawSecretOpt,
  RawSshOpt,
  RawTmpfsOpt,
  RawUlimit,
} from './json-types.js';
import { type ExecMeta, type ExecMount, type ExecOp, type MountType, ULIMIT_NAMES } from './types.js';

const EXEC_FIELDS = fieldsOf<RawExec>({ meta: true, mounts: true, network: true, security: true, secretEnv: true });
const META_FIELDS = fieldsOf<RawExecMeta>({
  args: true,
  env: true,
  cwd: true,
  user: true,
  hostname: true,
  extraHosts: true,
  ulimit: true,
  cgroupParent: true,
  validExitCodes: true,
  proxyEnv: true,
  removeMountStubsRecursive: true,
});
const PROXY_FIELDS = fieldsOf<RawProxyEnv>({ httpProxy: true, httpsProxy: true, ftpProxy: true, noProxy: true, allProxy: true });
/** The variables each proxy field sets, upper and lower case, as buildkitd sets them. */
const PROXY_VARS: Readonly<Record<keyof RawProxyEnv, string>> = {
  httpProxy: 'HTTP_PROXY',
  httpsProxy: 'HTTPS_PROXY',
  ftpProxy: 'FTP_PROXY',
  noProxy: 'NO_PROXY',
  allProxy: 'ALL_PROXY',
};
const MOUNT_FIELDS = fieldsOf<RawMount>({
  type: true,
  dest: true,
  input: true,
  selector: true,
  output: true,
  readonly: true,
  cache: true,
  tmpfs: true,
  secret: true,
  ssh: true,
  contentCache: true,
});
const CACHE_FIELDS = fieldsOf<RawCacheOpt>({ id: true, sharing: true });
const TMPFS_FIELDS = fieldsOf<RawTmpfsOpt>({ size: true });
const SECRET_FIELDS = fieldsOf<RawSecretOpt>({ id: true, uid: true, gid: true, mode: true, optional: true });
const SSH_FIELDS = fieldsOf<RawSshOpt>({ id: true, uid: true, gid: true, mode: true, optional: true });
const EXTRA_HOST_FIELDS = fieldsOf<RawExtraHost>({ host: true, ip: true });
const ULIMIT_FIELDS = fieldsOf<RawUlimit>({ name: true, soft: true, hard: true });
const SECRET_ENV_FIELDS = fieldsOf<RawSecretEnv>({ id: true, name: true, optional: true });

const MOUNT_TYPES = ['bind', 'cache', 'tmpfs', 'secret', 'ssh'] as const satisfies readonly MountType[];
/** The per-type option objects; each is allowed only on a mount of its own type. */
const MOUNT_OPTIONS = ['cache', 'tmpfs', 'secret', 'ssh'] as const satisfies readonly MountType[];
const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Dot-separated RFC 1123 labels. */
const HOSTNAME_RE = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
/** sethostname(2)'s limit (HOST_NAME_MAX); a valid hostname is ASCII, so characters are bytes. */
const MAX_HOSTNAME = 64;

/** A validated exec body and how many outputs it has. */
export interface LoadedExec {
  readonly exec: ExecOp;
  readonly outputCount: number;
}

/** Validates an `exec` body of an op that has `inputCount` inputs. */
export function loadExec(c: Checker, value: unknown, at: string, inputCount: number): LoadedExec | undefined {
  const f = c.object(value, at, EXEC_FIELDS);
  if (f === undefined) return undefined;
  const metaFields = f.object('meta', META_FIELDS, true);
  const meta = metaFields === undefined ? undefined : loadMeta(c, metaFields);
  const items = f.list('mounts', true);
  const loaded = items?.map((item) => loadMount(c, item, { inputCount, mountCount: items.length }));
  // The rules across mounts only make sense once every mount is readable; a
  // broken one was reported already and would only add misleading noise here.
  const mounts = loaded?.every((m) => m !== undefined) === true ? loaded : undefined;
  const outputCount = mounts === undefined ? 0 : checkMounts(c, mounts, f.at('mounts'));
  const network = f.oneOf('network', ['sandbox', 'host', 'none']) ?? 'sandbox';
  const security = f.oneOf('security', ['sandbox', 'insecure']) ?? 'sandbox';
  const secretEnv = (f.list('secretEnv') ?? []).map((item) => {
    const s = c.object(item.value, item.path, SECRET_ENV_FIELDS);
    const name = s?.text('name', true);
    if (name !== undefined && !ENV_NAME_RE.test(name)) c.report(fieldPath(item.path, 'name'), `"${name}" is not a valid environment variable name`);
    return { id: s?.text('id', true) ?? '', name: name ?? '', optional: s?.bool('optional') ?? false };
  });
  if (meta === undefined || mounts === undefined) return undefined;
  return { exec: { meta, mounts, network, security, secretEnv }, outputCount };
}

function loadMeta(c: Checker, f: Fields): ExecMeta {
  const args = f.strings('args', true) ?? [];
  if (f.has('args') && args.length === 0) c.report(f.at('args'), 'must not be empty: give the program to run and its arguments');
  const env = f.strings('env') ?? [];
  env.forEach((entry, i) => {
    if (!/^[^=]+=/.test(entry)) c.report(indexPath(f.at('env'), i), `must be NAME=VALUE, got "${entry}"`);
  });
  const cwd = f.string('cwd') ?? '/';
  if (!cwd.startsWith('/')) c.report(f.at('cwd'), `must be an absolute path, got "${cwd}"`);
  const extraHosts = (f.list('extraHosts') ?? []).map((item) => {
    const h = c.object(item.value, item.path, EXTRA_HOST_FIELDS);
    const ip = h?.string('ip', true);
    if (ip !== undefined && isIP(ip) === 0) c.report(fieldPath(item.path, 'ip'), `"${ip}" is not an IPv4 or IPv6 address`);
    const host = h?.text('host', true);
    if (host !== undefined && !HOSTNAME_RE.test(host)) c.report(fieldPath(item.path, 'host'), hostnameProblem(host, 'an /etc/hosts name'));
    return { host: host ?? '', ip: ip ?? '' };
  });
  const ulimit = (f.list('ulimit') ?? []).map((item) => loadUlimit(c, item));
  const exitCodes = f.list('validExitCodes');
  if (exitCodes?.length === 0) c.report(f.at('validExitCodes'), 'must not be empty (every exit would count as a failure)');
  const proxyFields = f.object('proxyEnv', PROXY_FIELDS);
  const proxyEnv = PROXY_FIELDS.flatMap((key) => {
    const value = proxyFields?.string(key) ?? '';
    return value === '' ? [] : [`${PROXY_VARS[key]}=${value}`, `${PROXY_VARS[key].toLowerCase()}=${value}`];
  });
  const removeStubs = f.bool('removeMountStubsRecursive') ?? false;
  return {
    args,
    env,
    cwd,
    ...(proxyEnv.length === 0 ? {} : { proxyEnv }),
    ...(removeStubs ? { removeMountStubsRecursive: true } : {}),
    user: f.read('user', (v, p) => loadUser(c, v, p)) ?? '',
    hostname: f.read('hostname', (v, p) => loadHostname(c, v, p)) ?? '',
    extraHosts,
    ulimit,
    cgroupParent: f.string('cgroupParent') ?? '',
    validExitCodes: exitCodes?.map((item) => c.int(item.value, item.path, { min: 0, max: 255 }) ?? 0) ?? [0],
  };
}

/** `uid[:gid]`, `name[:group]` or empty (root); a numeric part must be an id the kernel takes. */
function loadUser(c: Checker, value: unknown, at: string): string | undefined {
  const user = c.string(value, at);
  for (const part of user?.split(':') ?? []) {
    const problem = /^\d+$/.test(part) ? idProblem(part) : undefined;
    if (problem !== undefined) return c.report(at, `"${part}" ${problem}`);
  }
  return user;
}

/**
 * The container's hostname: sethostname(2) takes at most 64 bytes, and
 * RFC 1123 labels (letters, digits and inner hyphens) separated by dots keep
 * it a name every resolver and /etc/hosts reader accepts.
 */
function loadHostname(c: Checker, value: unknown, at: string): string | undefined {
  const hostname = c.string(value, at);
  if (hostname === undefined || hostname === '') return hostname;
  if (hostname.length > MAX_HOSTNAME) return c.report(at, `is ${hostname.length} characters long; a hostname is at most ${MAX_HOSTNAME}`);
  return HOSTNAME_RE.test(hostname) ? hostname : c.report(at, hostnameProblem(hostname, 'a hostname'));
}

function hostnameProblem(name: string, what: string): string {
  return `"${name}" is not ${what}: use dot-separated labels of letters, digits and "-" (not first or last in a label), each at most 63 characters`;
}

function loadUlimit(c: Checker, item: Located): ExecMeta['ulimit'][number] {
  const u = c.object(item.value, item.path, ULIMIT_FIELDS);
  const name = u?.oneOf('name', ULIMIT_NAMES, true) ?? '';
  const soft = u?.int('soft', { min: -1 }, true);
  const hard = u?.int('hard', { min: -1 }, true);
  // -1 means unlimited, so only a finite hard limit can be exceeded.
  if (soft !== undefined && hard !== undefined && hard !== -1 && (soft === -1 || soft > hard)) {
    c.report(fieldPath(item.path, 'soft'), `the soft limit (${soft === -1 ? 'unlimited' : soft}) is above the hard limit (${hard})`);
  }
  return { name, soft: soft ?? -1, hard: hard ?? -1 };
}

/** `/work/` and `/work/./` mount at the same place as `/work`. */
function normalizeDest(dest: string): string {
  const normal = path.posix.normalize(dest);
  return normal.length > 1 && normal.endsWith('/') ? normal.slice(0, -1) : normal;
}

/** What a mount's numbers may refer to: the op's inputs, and one output per mount at most. */
interface MountPlace {
  readonly inputCount: number;
  readonly mountCount: number;
}

function loadMount(c: Checker, item: Located, { inputCount, mountCount }: MountPlace): ExecMount | undefined {
  const m = c.object(item.value, item.path, MOUNT_FIELDS);
  if (m === undefined) return undefined;
  const type = m.oneOf('type', MOUNT_TYPES) ?? 'bind';
  const rawDest = m.text('dest', true);
  if (rawDest !== undefined && !rawDest.startsWith('/')) c.report(m.at('dest'), `must be an absolute path, got "${rawDest}"`);

  const takesInput = type === 'bind' || type === 'cache';
  const inputRange = takesInput
    ? { min: -1, max: inputCount - 1, hint: inputRangeHint(inputCount) }
    : { min: -1, max: -1, hint: `${aMount(type)} takes no input; use -1 or leave it out` };
  const input = m.int('input', inputRange) ?? -1;
  if (m.has('selector') && !(takesInput && input >= 0)) c.report(m.at('selector'), 'a selector needs a bind or cache mount with an input');
  const selector = m.string('selector') ?? '';

  // BuildKit's client leaves `output` at 0 on secret and ssh mounts, and buildkitd ignores it there; so does kiln.
  const ownedByCaller = type === 'secret' || type === 'ssh';
  const outputs =
    type === 'bind'
      ? outputRange(mountCount, 'mount')
      : { min: -1, max: ownedByCaller ? 0 : -1, hint: `only bind mounts become outputs; use -1${ownedByCaller ? ' (or 0, which BuildKit writes)' : ''} or leave it out` };
  const output = m.int('output', outputs) ?? -1;
  const alwaysReadonly = type === 'secret' || type === 'ssh';
  const readonly = m.bool('readonly');
  if (alwaysReadonly && readonly === false) c.report(m.at('readonly'), `${type} mounts are always read-only; leave readonly out`);
  m.oneOf('contentCache', ['default', 'on', 'off']);
  if (readonly === true && output >= 0 && !ownedByCaller) c.report(m.at('output'), 'a readonly mount cannot become an output; set output to -1 or readonly to false');
  for (const option of MOUNT_OPTIONS) {
    if (option !== type && m.has(option)) c.report(m.at(option), `only allowed on ${aMount(option)} (this one is ${type})`);
  }
  if (rawDest === undefined) return undefined;

  const dest = normalizeDest(rawDest);
  // Each kind gets exactly its fields: the checks above made sure the
  // others were left out (or at their defaults).
  switch (type) {
    case 'bind':
      return { type, dest, input, selector, output, readonly: readonly ?? false };
    case 'cache': {
      const o = m.object('cache', CACHE_FIELDS);
      return { type, dest, input, selector, readonly: readonly ?? false, cache: { id: o?.text('id') ?? dest, sharing: o?.oneOf('sharing', ['shared', 'private', 'locked']) ?? 'shared' } };
    }
    case 'tmpfs':
      return { type, dest, readonly: readonly ?? false, tmpfs: { size: m.object('tmpfs', TMPFS_FIELDS)?.int('size', { min: 0 }) ?? 0 } };
    case 'secret': {
      const o = m.object('secret', SECRET_FIELDS, true);
      return { type, dest, secret: { id: o?.text('id', true) ?? '', ...ownership(o, 0o400) } };
    }
    case 'ssh': {
      const o = m.object('ssh', SSH_FIELDS);
      return { type, dest, ssh: { id: o?.text('id') ?? 'default', ...ownership(o, 0o600) } };
    }
    default:
      return assertNever(type, 'mount type');
  }
}

/** The uid/gid/mode/optional fields shared by secret and ssh mounts. */
function ownership(o: Fields | undefined, defaultMode: number): { uid: number; gid: number; mode: number; optional: boolean } {
  return {
    uid: o?.int('uid', ID_RANGE) ?? 0,
    gid: o?.int('gid', ID_RANGE) ?? 0,
    mode: o?.mode('mode') ?? defaultMode,
    optional: o?.bool('optional') ?? false,
  };
}

/** The rules across an op's mounts; returns the number of outputs. */
function checkMounts(c: Checker, mounts: readonly ExecMount[], listPath: string): number {
  const byDest = new Map<string, number>();
  mounts.forEach((mount, i) => {
    const first = byDest.get(mount.dest);
    if (first === undefined) byDest.set(mount.dest, i);
    else c.report(fieldPath(indexPath(listPath, i), 'dest'), `"${mount.dest}" is already mounted by mounts[${first}]`);
  });
  const root = byDest.get('/');
  const rootType = root === undefined ? undefined : mounts[root]?.type;
  if (root === undefined) c.report(listPath, 'no mount has dest "/": exactly one mount must be the root filesystem');
  else if (rootType !== 'bind') c.report(fieldPath(indexPath(listPath, root), 'type'), `the "/" mount must be a bind mount, not ${rootType ?? ''}`);
  return countOutputs(
    c,
    mounts.map((m) => (m.type === 'bind' ? m.output : -1)),
    listPath,
    'mounts',
  );
}

/** `a cache mount`, `an ssh mount`: the kind of mount with its article, for messages. */
function aMount(type: string): string {
  return `${type === 'ssh' ? 'an' : 'a'} ${type} mount`;
}
