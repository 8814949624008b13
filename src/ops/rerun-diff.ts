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
import { type LocalFileSignature, signatureEntries } from '../source/local/checksum.js';

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
    if (before.length === after.length || before.length * after.length > MAX_ALIGNED_CELLS) {
      for (let i = 0; i < Math.max(before.length, after.length); i++) {
        changes.push(...member(before, after, i, `${path}[${i}]`));
      }
      return changes;
    }
    return alignedChanges(before, after, path);
  }
  if (isRecord(before) && isRecord(after)) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
    for (const key of keys) changes.push(...member(before, after, key, joinPath(path, key)));
    return changes;
  }
  return [{ path: path === '' ? '(op)' : path, old: shownValue(before), new: shownValue(after) }];
}

/** Lists longer than this (old length × new length) are compared by position only. */
const MAX_ALIGNED_CELLS = 65_536;

/**
 * Two lists of different lengths, aligned on their longest common
 * subsequence, so one argument or variable added in the middle is one
 * change, not a change of every element after it. Between two kept
 * elements, elements are paired as changed, and the rest are added (at
 * their new index) or removed (at their old index).
 */
function alignedChanges(before: readonly unknown[], after: readonly unknown[], path: string): FieldChange[] {
  const a = before.map((v) => canonicalJson(v));
  const b = after.map((v) => canonicalJson(v));
  // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
  const lcs = Array.from({ length: a.length + 1 }, () => new Uint32Array(b.length + 1));
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      const row = lcs[i] as Uint32Array;
      const below = lcs[i + 1] as Uint32Array;
      row[j] = a[i] === b[j] ? (below[j + 1] as number) + 1 : Math.max(below[j] as number, row[j + 1] as number);
    }
  }
  const changes: FieldChange[] = [];
  const gap = (i0: number, i1: number, j0: number, j1: number): void => {
    const paired = Math.min(i1 - i0, j1 - j0);
    for (let k = 0; k < paired; k++) changes.push(...fieldChanges(before[i0 + k], after[j0 + k], `${path}[${j0 + k}]`));
    for (let i = i0 + paired; i < i1; i++) changes.push({ path: `${path}[${i}]`, old: shownValue(before[i]) });
    for (let j = j0 + paired; j < j1; j++) changes.push({ path: `${path}[${j}]`, new: shownValue(after[j]) });
  };
  let i = 0;
  let j = 0;
  let gi = 0;
  let gj = 0;
  while (i < a.length && j < b.length) {
    if (a[i] === b[j]) {
      gap(gi, i, gj, j);
      gi = ++i;
      gj = ++j;
    } else if ((lcs[i + 1]?.[j] ?? 0) >= (lcs[i]?.[j + 1] ?? 0)) {
      i++;
    } else {
      j++;
    }
  }
  gap(gi, a.length, gj, b.length);
  return changes;
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
  const changes: { path: string; change: 'added' | 'removed' | 'modified' }[] = [];
  if (before === after) return { changes, total: 0 };
  const earlier = signatureEntries(before);
  const later = signatureEntries(after);
  let total = 0;
  const note = (path: string, change: 'added' | 'removed' | 'modified'): void => {
    total++;
    if (changes.length < MAX_FILES) changes.push({ path, change });
  };
  // Both lists are in walk order: while their paths pair up, a change is a
  // modification seen in place, and no map of the whole tree is needed.
  let same = 0;
  for (; same < earlier.length && same < later.length && earlier[same]![0] === later[same]![0]; same++) {
    if (earlier[same]![1] !== later[same]![1]) note(earlier[same]![0], 'modified');
  }
  const old = new Map(earlier.slice(same));
  const seen = new Set<string>();
  for (const [path, signature] of later.slice(same)) {
    seen.add(path);
    const was = old.get(path);
    if (was === undefined) note(path, 'added');
    else if (was !== signature) note(path, 'modified');
  }
  for (const [path] of earlier.slice(same)) if (!seen.has(path)) note(path, 'removed');
  return { changes, total };
}
