/**
 * Validation of file ops: a list of actions, each changing one filesystem
 * (an op input, an earlier action's result, or scratch). Modes, owners,
 * timestamps and mkfile contents are decoded here into their normalized form.
 */
import { Buffer } from 'node:buffer';
import { assertNever } from '../errors.js';
import { type Checker, countOutputs, type Fields, fieldsOf, ID_RANGE, inputRangeHint, joinOr, type Located, outputRange, parseOctalMode } from './check.js';
import type {
  RawChown,
  RawCopy,
  RawFile,
  RawFileActionBodies,
  RawFileActionCommon,
  RawMkdir,
  RawMkfile,
  RawRm,
  RawSymlink,
} from './json-types.js';
import type { ChownOpt, CopyMode, FileAction, FileActionBody, FileOp } from './types.js';

const FILE_FIELDS = fieldsOf<RawFile>({ actions: true });
const ACTION_KINDS = fieldsOf<RawFileActionBodies>({ mkdir: true, mkfile: true, rm: true, symlink: true, copy: true });
const ACTION_FIELDS = [...fieldsOf<RawFileActionCommon>({ input: true, secondaryInput: true, output: true }), ...ACTION_KINDS];
const MKDIR_FIELDS = fieldsOf<RawMkdir>({ path: true, mode: true, makeParents: true, owner: true, timestamp: true });
const MKFILE_FIELDS = fieldsOf<RawMkfile>({ path: true, mode: true, data: true, dataBase64: true, owner: true, timestamp: true });
const RM_FIELDS = fieldsOf<RawRm>({ path: true, allowNotFound: true, allowWildcard: true });
const SYMLINK_FIELDS = fieldsOf<RawSymlink>({ oldpath: true, newpath: true, owner: true, timestamp: true });
const COPY_FIELDS = fieldsOf<RawCopy>({
  src: true,
  dest: true,
  owner: true,
  mode: true,
  followSymlink: true,
  dirCopyContents: true,
  createDestPath: true,
  allowWildcard: true,
  allowEmptyWildcard: true,
  includePatterns: true,
  excludePatterns: true,
  timestamp: true,
  alwaysReplaceExistingDestPaths: true,
  attemptUnpack: true,
  requiredPaths: true,
});
const OWNER_FIELDS = fieldsOf<RawChown>({ user: true, group: true });

const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
/** chmod's symbolic grammar: clauses like `u+x`, `go-w`, `a=r`, `+x`, `g=u`, comma-separated. */
const CHMOD_RE = /^[ugoa]*(?:[-+=](?:[rwxXst]*|[ugo]))+(?:,[ugoa]*(?:[-+=](?:[rwxXst]*|[ugo]))+)*$/;
const MAX_INT64 = 2n ** 63n - 1n;

/** A validated file body and how many outputs it has. */
export interface LoadedFile {
  readonly file: FileOp;
  readonly outputCount: number;
}

/** Validates a `file` body of an op that has `inputCount` inputs. */
export function loadFile(c: Checker, value: unknown, at: string, inputCount: number): LoadedFile | undefined {
  const f = c.object(value, at, FILE_FIELDS);
  if (f === undefined) return undefined;
  const items = f.list('actions', true) ?? [];
  if (f.has('actions') && items.length === 0) c.report(f.at('actions'), 'must not be empty: give at least one action');
  const loaded = items.map((item, k) => loadAction(c, item, { inputCount, k, actionCount: items.length }));
  // Output numbering is checked once every action is readable (see load-exec.ts).
  const actions = loaded.every((a) => a !== undefined) ? loaded : undefined;
  if (actions === undefined || actions.length === 0) return undefined;
  const outputCount = countOutputs(
    c,
    actions.map((a) => a.output),
    f.at('actions'),
    'actions',
  );
  return { file: { actions }, outputCount };
}

/** Where action `k` sits: the op's input count and how many actions the op has. */
interface ActionPlace {
  readonly inputCount: number;
  readonly k: number;
  readonly actionCount: number;
}

function loadAction(c: Checker, item: Located, { inputCount, k, actionCount }: ActionPlace): FileAction | undefined {
  const a = c.object(item.value, item.path, ACTION_FIELDS);
  if (a === undefined) return undefined;
  const kinds = ACTION_KINDS.filter((kind) => a.has(kind));
  const kind = kinds[0];
  if (kinds.length === 0) c.report(item.path, `an action needs one of ${joinOr(ACTION_KINDS)}`);
  if (kinds.length > 1) c.report(item.path, `has both ${kinds.join(' and ')}; an action does exactly one of ${joinOr(ACTION_KINDS)}`);

  // Action k may use the op's inputs and the results of actions 0..k-1 only.
  const range = { min: -1, max: inputCount + k - 1, hint: inputRangeHint(inputCount, k) };
  const input = a.int('input', range, true);
  const secondaryInput =
    kind === 'copy'
      ? a.int('secondaryInput', range, true)
      : (a.int('secondaryInput', { min: -1, max: -1, hint: 'only copy actions take a secondaryInput; use -1 or leave it out' }) ?? -1);
  const output = a.int('output', outputRange(actionCount, 'action')) ?? -1;
  if (kind === undefined || kinds.length > 1) return undefined;
  const body = loadActionBody(c, kind, a.get(kind), a.at(kind));
  if (body === undefined || input === undefined || secondaryInput === undefined) return undefined;
  return { ...body, input, secondaryInput, output };
}

function loadActionBody(c: Checker, kind: keyof RawFileActionBodies, value: unknown, at: string): FileActionBody | undefined {
  switch (kind) {
    case 'mkdir': {
      const f = c.object(value, at, MKDIR_FIELDS);
      if (f === undefined) return undefined;
      const mkdir = { path: f.text('path', true) ?? '', mode: f.mode('mode') ?? 0o755, makeParents: f.bool('makeParents') ?? false };
      return { kind, mkdir: { ...mkdir, ...ownerAndTimestamp(c, f) } };
    }
    case 'mkfile': {
      const f = c.object(value, at, MKFILE_FIELDS);
      if (f === undefined) return undefined;
      const mkfile = { path: f.text('path', true) ?? '', mode: f.mode('mode') ?? 0o644, data: fileData(c, f) };
      return { kind, mkfile: { ...mkfile, ...ownerAndTimestamp(c, f) } };
    }
    case 'rm': {
      const f = c.object(value, at, RM_FIELDS);
      if (f === undefined) return undefined;
      const rm = { path: f.text('path', true) ?? '', allowNotFound: f.bool('allowNotFound') ?? false, allowWildcard: f.bool('allowWildcard') ?? false };
      return { kind, rm };
    }
    case 'symlink': {
      const f = c.object(value, at, SYMLINK_FIELDS);
      if (f === undefined) return undefined;
      const symlink = { oldpath: f.text('oldpath', true) ?? '', newpath: f.text('newpath', true) ?? '' };
      return { kind, symlink: { ...symlink, ...ownerAndTimestamp(c, f) } };
    }
    case 'copy': {
      const f = c.object(value, at, COPY_FIELDS);
      if (f === undefined) return undefined;
      const mode = f.read('mode', (v, p) => copyMode(c, v, p));
      const attemptUnpack = f.bool('attemptUnpack') === true;
      const requiredPaths = f.strings('requiredPaths') ?? [];
      const copy = {
        src: f.text('src', true) ?? '',
        dest: f.text('dest', true) ?? '',
        followSymlink: f.bool('followSymlink') ?? false,
        dirCopyContents: f.bool('dirCopyContents') ?? false,
        createDestPath: f.bool('createDestPath') ?? false,
        allowWildcard: f.bool('allowWildcard') ?? false,
        allowEmptyWildcard: f.bool('allowEmptyWildcard') ?? false,
        includePatterns: f.strings('includePatterns') ?? [],
        excludePatterns: f.strings('excludePatterns') ?? [],
        alwaysReplaceExistingDestPaths: f.bool('alwaysReplaceExistingDestPaths') ?? false,
      };
      return { kind, copy: { ...copy, ...(mode === undefined ? {} : { mode }), ...ownerAndTimestamp(c, f), ...(attemptUnpack ? { attemptUnpack } : {}), ...(requiredPaths.length > 0 ? { requiredPaths } : {}) } };
    }
    default:
      return assertNever(kind, 'file action');
  }
}

/** The optional `owner` and `timestamp` fields of mkdir, mkfile, symlink and copy. */
function ownerAndTimestamp(c: Checker, f: Fields): { owner?: ChownOpt; timestamp?: bigint } {
  const owner = f.read('owner', (v, p) => loadOwner(c, v, p));
  const timestamp = f.read('timestamp', (v, p) => loadTimestamp(c, v, p));
  return { ...(owner === undefined ? {} : { owner }), ...(timestamp === undefined ? {} : { timestamp }) };
}

function loadOwner(c: Checker, value: unknown, at: string): ChownOpt | undefined {
  const f = c.object(value, at, OWNER_FIELDS);
  if (f === undefined) return undefined;
  const id = (v: unknown, p: string): number | string | undefined =>
    typeof v === 'string' ? c.text(v, p) : typeof v === 'number' ? c.int(v, p, ID_RANGE) : c.report(p, 'expected a numeric id or a name');
  const user = f.read('user', id);
  const group = f.read('group', id);
  return { ...(user === undefined ? {} : { user }), ...(group === undefined ? {} : { group }) };
}

/**
 * Unix nanoseconds: a number, or a decimal string. JSON.parse rounds numbers
 * beyond 2^53 (early 1970 in ns), so such a number is read from the text as
 * written; a parsed value handed to loadDefinition has lost those digits, and
 * needs the string form.
 */
function loadTimestamp(c: Checker, value: unknown, at: string): bigint | undefined {
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) return BigInt(value);
  if (typeof value === 'string' && /^\d+$/.test(value) && BigInt(value) <= MAX_INT64) return BigInt(value);
  // A number beyond 2^53 as the file wrote it (JSON.parse rounded it): nanoseconds since 1970 are all that large.
  const exact = typeof value === 'number' ? c.exactInteger(at) : undefined;
  if (typeof exact === 'bigint' && exact >= 0n && exact <= MAX_INT64) return exact;
  if (typeof exact === 'bigint' && exact > 0n) return c.report(at, `must be at most ${MAX_INT64} (unix time in nanoseconds)`);
  const tooBig = exact === undefined && typeof value === 'number' && Number.isInteger(value) && value > 0;
  return c.report(
    at,
    tooBig
      ? 'is too large to be exact as a JSON number; write it as a decimal string, such as "1700000000000000000"'
      : 'expected unix time in nanoseconds: a non-negative integer or a decimal string',
  );
}

/** The contents of an mkfile: `data` (UTF-8) or `dataBase64`, not both; neither is an empty file. */
function fileData(c: Checker, f: Fields): Uint8Array {
  const text = f.fileData('data');
  const base64 = f.string('dataBase64');
  if (text !== undefined && base64 !== undefined) c.report(f.path, 'give data or dataBase64, not both');
  if (base64 === undefined) return new TextEncoder().encode(text ?? '');
  if (!BASE64_RE.test(base64)) c.report(f.at('dataBase64'), 'is not valid base64');
  return Uint8Array.from(Buffer.from(base64, 'base64'));
}

/** A copy mode: bits (a number or octal string) or a chmod expression. */
function copyMode(c: Checker, value: unknown, at: string): CopyMode | undefined {
  if (typeof value === 'string' && parseOctalMode(value) === undefined) {
    if (CHMOD_RE.test(value)) return { kind: 'chmod', expr: value };
    return c.report(at, `expected an octal mode such as "0755" or a chmod expression such as "u+x,go-w", got "${value}"`);
  }
  const bits = c.mode(value, at);
  return bits === undefined ? undefined : { kind: 'bits', bits };
}
