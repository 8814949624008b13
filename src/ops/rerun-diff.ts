/**
 * What changed between two builds of an op, as pure functions over what
 * each build remembered of its key (./rerun-history.ts): the fields of the
 * op's canonical form, its inputs' keys, a local source's file list.
 *
 * Values are shown as JSON, shortened; what is remembered is already masked
 * (URL credentials), and secrets' values never were in a canonical form, so
 * nothing here can show one.
 */
import { canonicalJson } from '../digest.js';
import { maskUrlCredentials } from '../llb/op-name.js';
import type { FieldChange, FileChanges } from '../progress/types.js';
import type { LocalFileSignature } from '../source/local/checksum.js';

/** Fields listed in a reason; more are counted. */
export const MAX_FIELDS = 5;
/** Paths of a local source listed in a reason; more are counted. */
export const MAX_FILES = 10;
/** A value shown longer than this is cut, with `...` (so a reason stays one line). */
export const MAX_VALUE_CHARS = 60;

/**
 * `value` as plain JSON data (what the store keeps): every string with URL
 * credentials masked, bigints as decimal strings, undefined members dropped.
 */
export function rememberedForm(value: unknown): unknown {
  return JSON.parse(canonicalJson(masked(value))) as unknown;
}

function masked(value: unknown): unknown {
  if (typeof value === 'string') return maskUrlCredentials(value);
  if (typeof value === 'bigint') return value.toString();
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map(masked);
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, masked(v)]));
}

/** A value as a reason shows it: JSON, cut to about MAX_VALUE_CHARS (a string inside its quotes). */
export function shownValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > MAX_VALUE_CHARS ? `${value.slice(0, MAX_VALUE_CHARS - 3)}...` : value);
  const text = JSON.stringify(value) ?? 'undefined';
  return text.length > MAX_VALUE_CHARS ? `${text.slice(0, MAX_VALUE_CHARS - 3)}...` : text;
}

/** The fields that differ between `before` and `after` (plain JSON data), depth first, in key order. */
export function fieldChanges(before: unknown, after: unknown, path = ''): FieldChange[] {
  if (canonicalJson(before) === canonicalJson(after)) return [];
  const changes: FieldChange[] = [];
  if (Array.isArray(before) && Array.isArray(after)) {
    for (let i = 0; i < Math.max(before.length, after.length); i++) {
      changes.push(...member(before, after, i, `${path}[${i}]`));
    }
    return changes;
  }
  if (isRecord(before) && isRecord(after)) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
    for (const key of keys) changes.push(...member(before, after, key, joinPath(path, key)));
    return changes;
  }
  return [{ path: path === '' ? '(op)' : path, old: shownValue(before), new: shownValue(after) }];
}

function member(before: object, after: object, key: string | number, path: string): FieldChange[] {
  const had = Object.hasOwn(before, key);
  const has = Object.hasOwn(after, key);
  const old = (before as Record<string | number, unknown>)[key];
  const now = (after as Record<string | number, unknown>)[key];
  if (had && !has) return [{ path, old: shownValue(old) }];
  if (!had && has) return [{ path, new: shownValue(now) }];
  return fieldChanges(old, now, path);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `meta.args`, or `attrs["local.followpaths"]` for a key that is not a plain name. */
function joinPath(path: string, key: string): string {
  if (/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(key)) return path === '' ? key : `${path}.${key}`;
  return `${path}[${JSON.stringify(key)}]`;
}

/**
 * The paths added, removed or modified between two file lists (each sorted
 * by path, as the checksum walks them), the first MAX_FILES of them, and
 * how many in all. A list that was too long to keep (null) lists nothing.
 */
export function fileChanges(before: LocalFileSignature, after: LocalFileSignature): FileChanges {
  if (before === null || after === null) return { changes: [] };
  const old = new Map(before);
  const changes: { path: string; change: 'added' | 'removed' | 'modified' }[] = [];
  let total = 0;
  const note = (path: string, change: 'added' | 'removed' | 'modified'): void => {
    total++;
    if (changes.length < MAX_FILES) changes.push({ path, change });
  };
  const seen = new Set<string>();
  for (const [path, signature] of after) {
    seen.add(path);
    const was = old.get(path);
    if (was === undefined) note(path, 'added');
    else if (was !== signature) note(path, 'modified');
  }
  for (const [path] of before) if (!seen.has(path)) note(path, 'removed');
  return { changes, total };
}
