/**
 * Reading untrusted JSON while collecting every problem. The accessors here
 * report a Diagnostic (JSON path + message) and return undefined instead of
 * throwing, so one load lists all the mistakes in a file rather than making
 * its author fix them one run at a time.
 */
import type { Diagnostic } from '../errors.js';

/** A value together with the JSON path it was found at. */
export interface Located {
  readonly value: unknown;
  readonly path: string;
}

/** Bounds of an integer field; `hint` replaces the generic out-of-range message. */
export interface IntRange {
  readonly min?: number;
  readonly max?: number;
  readonly hint?: string;
}

/**
 * The path diagnostics give for the whole document (a top-level value that
 * is not an object, a syntax error before any field), so that every
 * diagnostic names where it is.
 */
export const ROOT_PATH = '(root)';

/** In a `u` regexp a surrogate pair is one code point, so this matches only unpaired halves. */
const LONE_SURROGATE_RE = /\p{Surrogate}/u;

const IDENTIFIER_RE = /^[A-Za-z0-9_$][\w$-]*$/;

/**
 * The path one field deeper: (`ops.a`, `exec`) → `ops.a.exec`. Keys that are
 * contain dots or other punctuation (`local.followpaths`) are bracketed so the path
 * stays unambiguous: `attrs["local.followpaths"]`.
 */
export function fieldPath(path: string, key: string): string {
  if (!IDENTIFIER_RE.test(key)) return `${path}[${JSON.stringify(key)}]`;
  return path === '' ? key : `${path}.${key}`;
}

/** The path of an array element: (`ops.a.inputs`, 1) → `ops.a.inputs[1]`. */
export function indexPath(path: string, index: number): string {
  return `${path}[${index}]`;
}

/**
 * The field names of a raw JSON type. Taking a `Record<keyof T, true>` makes
 * the compiler check the list is exact and complete, so the validator cannot
 * drift from json-types.ts.
 */
export function fieldsOf<T>(fields: Record<keyof T & string, true>): readonly (keyof T & string)[] {
  return Object.keys(fields) as (keyof T & string)[];
}

/** "a, b or c". */
export function joinOr(words: readonly string[]): string {
  return words.length <= 1 ? words.join('') : `${words.slice(0, -1).join(', ')} or ${words.at(-1) ?? ''}`;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitute = (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      row.push(Math.min((prev[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, substitute));
    }
    prev = row;
  }
  return prev[b.length] ?? 0;
}

/**
 * ` (did you mean "x"?)` when a candidate is at most two edits from `word`,
 * else ''. Case is ignored (`workingdir` means `workingDir`); short words
 * allow fewer edits, so `"x"` is not "close" to `"id"`.
 */
export function didYouMean(word: string, candidates: Iterable<string>): string {
  let best: string | undefined;
  let bestDistance = Math.min(2, Math.floor(word.length / 2)) + 1;
  for (const candidate of candidates) {
    // The distance is at least the difference in length: skipping on it keeps a megabyte-long key linear.
    if (Math.abs(candidate.length - word.length) >= bestDistance) continue;
    const distance = editDistance(word.toLowerCase(), candidate.toLowerCase());
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best === undefined ? '' : ` (did you mean "${best}"?)`;
}

/**
 * A short description of a JSON value for "expected X, got Y" messages; it
 * never serializes a container, which may be megabytes long or thousands of
 * levels deep.
 */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  const text = JSON.stringify(value) ?? String(value);
  return `${typeof value} ${text.length > 40 ? `${text.slice(0, 37)}...` : text}`;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const OCTAL_MODE_RE = /^0?[0-7]{1,4}$/;
const MAX_MODE = 0o7777;

/** `"0755"` / `"755"` → 0o755; undefined when `text` is not an octal mode. */
export function parseOctalMode(text: string): number | undefined {
  return OCTAL_MODE_RE.test(text) ? Number.parseInt(text, 8) : undefined;
}

/** Collects the diagnostics of one load; every accessor reports here. */
export class Checker {
  readonly diagnostics: Diagnostic[] = [];
  readonly #numberTexts: ReadonlyMap<string, string>;

  /** `numberTexts`: the text of numbers beyond 2^53 as the JSON wrote them, by path (see json-syntax.ts). */
  constructor(options: { readonly numberTexts?: ReadonlyMap<string, string> } = {}) {
    this.#numberTexts = options.numberTexts ?? new Map();
  }

  /**
   * The exact integer the JSON text wrote at `path` for a number JSON.parse
   * had to round (`1700000000123456789`, `1.7e18`): undefined when the text is
   * not known (a parsed value given to loadDefinition), null when it is not
   * an integer (`17000000000000000.5`).
   */
  exactInteger(path: string): bigint | null | undefined {
    const text = this.#numberTexts.get(path);
    if (text === undefined) return undefined;
    const m = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(text);
    if (m === null) return null;
    const [, sign = '', whole = '', fraction = '', exponent = '0'] = m;
    // digits × 10^shift, an integer when the shift is not negative or cuts only zeros.
    const digits = (whole + fraction).replace(/^0+(?=\d)/, '');
    const shift = Number(exponent) - fraction.length;
    if (shift < 0 && !/^0*$/.test(digits.slice(shift))) return null;
    // Far beyond any field's range: the number is not built (1e999999 would take a while).
    if (digits.length + shift > 40) return BigInt(`1${'0'.repeat(40)}`) * (sign === '-' ? -1n : 1n);
    const value = shift >= 0 ? BigInt(digits) * 10n ** BigInt(shift) : BigInt(digits.slice(0, shift) || '0');
    return sign === '-' ? -value : value;
  }

  /** Records a problem; returns undefined so callers can `return c.report(...)`. */
  report(path: string, message: string): undefined {
    this.diagnostics.push({ path: path === '' ? ROOT_PATH : path, message });
    return undefined;
  }

  /**
   * The value as an object whose fields can be read one by one. Fields not in
   * `known` are reported (with a hint when one is close); `known: null` is for
   * maps, whose keys are free.
   */
  object(value: unknown, path: string, known: readonly string[] | null): Fields | undefined {
    if (!isPlainObject(value)) return this.report(path, `expected an object, got ${describe(value)}`);
    if (known !== null) {
      for (const key of Object.keys(value)) {
        if (!known.includes(key)) this.report(fieldPath(path, key), `unknown field "${key}"${didYouMean(key, known)}`);
      }
    }
    return new Fields(this, value, path);
  }

  /** The elements of an array, each with its path. */
  list(value: unknown, path: string): Located[] | undefined {
    if (!Array.isArray(value)) return this.report(path, `expected an array, got ${describe(value)}`);
    return value.map((item: unknown, i) => ({ value: item, path: indexPath(path, i) }));
  }

  /**
   * A string of well-formed Unicode without NUL: a lone surrogate
   * (`"\\ud800"`) has no UTF-8 form, so in a path, argument or file it would
   * silently become U+FFFD.
   */
  string(value: unknown, path: string): string | undefined {
    const s = this.fileData(value, path);
    if (s === undefined) return undefined;
    // Paths, arguments, variables, ids and names all reach the kernel or runc as C strings, where a NUL ends them early.
    const nul = s.indexOf('\0');
    return nul < 0 ? s : this.report(path, `holds a NUL character (at index ${nul}), which no path, argument, variable or name can contain`);
  }

  /** A string that may hold any character but a lone surrogate: the contents of a file. */
  fileData(value: unknown, path: string): string | undefined {
    if (typeof value !== 'string') return this.report(path, `expected a string, got ${describe(value)}`);
    const surrogate = LONE_SURROGATE_RE.exec(value);
    if (surrogate === null) return value;
    const code = surrogate[0].charCodeAt(0).toString(16);
    return this.report(path, `holds a lone surrogate (\\u${code} at index ${surrogate.index}), which is not valid Unicode and has no UTF-8 form`);
  }

  /** A non-empty string. */
  text(value: unknown, path: string): string | undefined {
    const s = this.string(value, path);
    return s === '' ? this.report(path, 'must not be empty') : s;
  }

  bool(value: unknown, path: string): boolean | undefined {
    return typeof value === 'boolean' ? value : this.report(path, `expected true or false, got ${describe(value)}`);
  }

  int(value: unknown, path: string, range: IntRange = {}): number | undefined {
    if (typeof value !== 'number' || !Number.isSafeInteger(value)) return this.report(path, `expected an integer, got ${describe(value)}`);
    const { min = -Infinity, max = Infinity, hint } = range;
    if (value >= min && value <= max) return value;
    if (hint !== undefined) return this.report(path, `${value} is out of range: ${hint}`);
    if (max === Infinity) return this.report(path, `must be >= ${min}, got ${value}`);
    if (min === -Infinity) return this.report(path, `must be <= ${max}, got ${value}`);
    return this.report(path, `must be between ${min} and ${max}, got ${value}`);
  }

  oneOf<const T extends string>(value: unknown, path: string, allowed: readonly T[]): T | undefined {
    const found = allowed.find((a) => a === value);
    if (found !== undefined) return found;
    const hint = typeof value === 'string' ? didYouMean(value, allowed) : '';
    return this.report(path, `must be ${joinOr(allowed.map((a) => `"${a}"`))}, got ${describe(value)}${hint}`);
  }

  strings(value: unknown, path: string): string[] | undefined {
    const items = this.list(value, path);
    if (items === undefined) return undefined;
    const out = items.map((item) => this.string(item.value, item.path));
    return out.every((s) => s !== undefined) ? out : undefined;
  }

  /** An object whose values are all strings (keys are free). */
  stringMap(value: unknown, path: string): Record<string, string> | undefined {
    const f = this.object(value, path, null);
    if (f === undefined) return undefined;
    const entries = f.keys().map((key) => ({ key, value: this.string(f.get(key), f.at(key)) }));
    const valid = entries.flatMap(({ key, value }) => (value === undefined ? [] : [[key, value] as const]));
    // fromEntries defines own properties, so even a "__proto__" key stays an ordinary entry.
    return valid.length === entries.length ? Object.fromEntries(valid) : undefined;
  }

  /** A file mode: a number 0..0o7777 or an octal string (`"0755"`, `"755"`). */
  mode(value: unknown, path: string): number | undefined {
    if (typeof value === 'string') {
      return parseOctalMode(value) ?? this.report(path, `expected an octal mode such as "0755", got ${describe(value)}`);
    }
    if (typeof value !== 'number') return this.report(path, `expected a mode (a number or an octal string such as "0755"), got ${describe(value)}`);
    return this.int(value, path, { min: 0, max: MAX_MODE, hint: 'a mode is between 0 and 0o7777 (4095)' });
  }
}

/** An object being read field by field, each field reported at its own path. */
export class Fields {
  readonly path: string;
  readonly #checker: Checker;
  readonly #obj: Record<string, unknown>;

  constructor(checker: Checker, obj: Record<string, unknown>, path: string) {
    this.#checker = checker;
    this.#obj = obj;
    this.path = path;
  }

  /** The JSON path of a field. */
  at(key: string): string {
    return fieldPath(this.path, key);
  }

  has(key: string): boolean {
    return Object.hasOwn(this.#obj, key);
  }

  get(key: string): unknown {
    return this.has(key) ? this.#obj[key] : undefined;
  }

  keys(): string[] {
    return Object.keys(this.#obj);
  }

  /** Reads a present field with `read`; an absent one is undefined, and reported when required. */
  read<T>(key: string, read: (value: unknown, path: string) => T | undefined, required = false): T | undefined {
    if (this.has(key)) return read(this.get(key), this.at(key));
    if (required) this.#checker.report(this.at(key), 'required field is missing');
    return undefined;
  }

  string(key: string, required = false): string | undefined {
    return this.read(key, (v, p) => this.#checker.string(v, p), required);
  }

  /** A non-empty string. */
  text(key: string, required = false): string | undefined {
    return this.read(key, (v, p) => this.#checker.text(v, p), required);
  }

  /** The contents of a file: any string of valid Unicode, NUL included. */
  fileData(key: string): string | undefined {
    return this.read(key, (v, p) => this.#checker.fileData(v, p));
  }

  bool(key: string): boolean | undefined {
    return this.read(key, (v, p) => this.#checker.bool(v, p));
  }

  int(key: string, range: IntRange = {}, required = false): number | undefined {
    return this.read(key, (v, p) => this.#checker.int(v, p, range), required);
  }

  oneOf<const T extends string>(key: string, allowed: readonly T[], required = false): T | undefined {
    return this.read(key, (v, p) => this.#checker.oneOf(v, p, allowed), required);
  }

  strings(key: string, required = false): string[] | undefined {
    return this.read(key, (v, p) => this.#checker.strings(v, p), required);
  }

  stringMap(key: string): Record<string, string> | undefined {
    return this.read(key, (v, p) => this.#checker.stringMap(v, p));
  }

  object(key: string, known: readonly string[] | null, required = false): Fields | undefined {
    return this.read(key, (v, p) => this.#checker.object(v, p, known), required);
  }

  list(key: string, required = false): Located[] | undefined {
    return this.read(key, (v, p) => this.#checker.list(v, p), required);
  }

  mode(key: string): number | undefined {
    return this.read(key, (v, p) => this.#checker.mode(v, p));
  }
}

/** How many missing outputs a gap message lists before it says "and N more". */
const MAX_LISTED_GAPS = 10;

/**
 * Checks that the outputs an op's mounts or actions claim are numbered 0..n-1
 * with no gap and no duplicate (`outputs[i]` belongs to `listPath[i]`, -1 =
 * none), and returns n. Callers bound each output by the list's length, so
 * the work here is linear in the list, whatever numbers the file holds.
 */
export function countOutputs(c: Checker, outputs: readonly number[], listPath: string, label: string): number {
  const owner = new Map<number, number>();
  let top = -1;
  outputs.forEach((output, i) => {
    if (output < 0) return;
    const first = owner.get(output);
    if (first !== undefined) {
      c.report(fieldPath(indexPath(listPath, i), 'output'), `output ${output} is already used by ${indexPath(label, first)}`);
      return;
    }
    owner.set(output, i);
    top = Math.max(top, output);
  });
  const missing: number[] = [];
  for (let i = 0; i <= top; i++) if (!owner.has(i)) missing.push(i);
  if (missing.length > 0) {
    const listed = missing.slice(0, MAX_LISTED_GAPS).join(', ');
    const more = missing.length > MAX_LISTED_GAPS ? ` and ${missing.length - MAX_LISTED_GAPS} more` : '';
    c.report(listPath, `outputs must be numbered 0..${top} without gaps; missing output ${listed}${more}`);
  }
  return owner.size;
}

/**
 * The range of an `output` field in a list of `count` mounts or actions
 * (`noun` is "mount" or "action"): -1 (none), else at most one output per
 * entry, numbered from 0.
 */
export function outputRange(count: number, noun: string): IntRange {
  const has = `the op has ${count} ${noun}${count === 1 ? '' : 's'}`;
  return { min: -1, max: count - 1, hint: `outputs are numbered from 0 without gaps and ${has}; use -1..${count - 1}` };
}

/**
 * The largest user or group id: ids are 32-bit, and 4294967295 is -1, which
 * chown(2) and setuid(2) read as "leave unchanged", never as an id.
 */
export const MAX_ID = 4294967294;

/** The range of a uid or gid field. */
export const ID_RANGE: IntRange = { min: 0, max: MAX_ID, hint: `user and group ids are 0..${MAX_ID}` };

/** What is wrong with a decimal id written as a string ("1000"), or undefined. */
export function idProblem(text: string): string | undefined {
  if (!/^\d+$/.test(text)) return 'must be a non-negative integer written as a string, such as "1000"';
  return text.length > 10 || Number(text) > MAX_ID ? `is out of range: user and group ids are 0..${MAX_ID}` : undefined;
}

/** Where an input index may point, for out-of-range messages (`earlierActions` for file actions). */
export function inputRangeHint(inputCount: number, earlierActions = 0): string {
  const span = (from: number, count: number): string => (count === 1 ? `${from}` : `${from}..${from + count - 1}`);
  const choices = ['-1 (scratch)'];
  if (inputCount > 0) choices.push(`${span(0, inputCount)} (the op's inputs)`);
  if (earlierActions > 0) choices.push(`${span(inputCount, earlierActions)} (earlier actions)`);
  const has = inputCount === 0 ? 'the op has no inputs' : `the op has ${inputCount} input${inputCount === 1 ? '' : 's'}`;
  return `${has}; use ${joinOr(choices)}`;
}
