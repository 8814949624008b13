/**
 * Parsing of the CLI's value syntaxes: buildctl-style `key=value,...` lists,
 * `NAME=DIR` bindings, byte sizes and durations. Errors are usage errors.
 */
import { durationMs } from '../duration.js';
import { ERROR_CODES, KilnError } from '../errors.js';

function usage(message: string): KilnError {
  return new KilnError(ERROR_CODES.USAGE, message);
}

/**
 * `type=local,dest=out` → { type: 'local', dest: 'out' }. As in buildctl
 * (CSV fields), a field in double quotes may hold commas (`"k=a,b"`; `""`
 * inside is one quote); a field that does not start with a quote is taken
 * as it is.
 */
export function parseCsvAttrs(flag: string, text: string): Record<string, string> {
  // No prototype: a key such as `constructor` or `__proto__` is only a key (and then an unknown one).
  const attrs = Object.create(null) as Record<string, string>;
  for (const part of csvFields(flag, text)) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw usage(`${flag} "${text}": expected key=value pairs separated by commas`);
    const key = part.slice(0, eq).trim();
    if (Object.hasOwn(attrs, key)) throw usage(`${flag} "${text}": ${key} is given twice`);
    attrs[key] = part.slice(eq + 1).trim();
  }
  return attrs;
}

/** The comma-separated fields of `text`, a field in double quotes taken whole (unquoted). */
function csvFields(flag: string, text: string): string[] {
  const fields: string[] = [];
  let at = 0;
  for (;;) {
    if (text[at] === '"') {
      let field = '';
      let i = at + 1;
      for (;;) {
        const close = text.indexOf('"', i);
        if (close < 0) throw usage(`${flag} "${text}": a quoted field is not closed`);
        field += text.slice(i, close);
        if (text[close + 1] !== '"') {
          i = close + 1;
          break;
        }
        field += '"';
        i = close + 2;
      }
      if (i < text.length && text[i] !== ',') throw usage(`${flag} "${text}": a quoted field must end at a comma`);
      fields.push(field);
      if (i >= text.length) return fields;
      at = i + 1;
    } else {
      const comma = text.indexOf(',', at);
      fields.push(text.slice(at, comma < 0 ? undefined : comma));
      if (comma < 0) return fields;
      at = comma + 1;
    }
  }
}

/** `NAME=DIR` → [NAME, DIR]. */
export function parseBinding(flag: string, text: string): [string, string] {
  const eq = text.indexOf('=');
  if (eq <= 0 || eq === text.length - 1) throw usage(`${flag} "${text}": expected NAME=VALUE`);
  return [text.slice(0, eq), text.slice(eq + 1)];
}

const SIZE_UNITS: ReadonlyMap<string, number> = new Map(Object.entries({ '': 1, b: 1, k: 1024, kb: 1024, kib: 1024, m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3, t: 1024 ** 4, tb: 1024 ** 4, tib: 1024 ** 4 }));

/** `512MB`, `10g`, `1048576` → bytes (binary units, as buildctl). */
export function parseBytes(flag: string, text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(text.trim());
  const unit = SIZE_UNITS.get((m?.[2] ?? '').toLowerCase());
  if (m === null || unit === undefined) throw usage(`${flag} "${text}": expected a size such as 512MB, 10GB or a number of bytes`);
  return Math.floor(Number(m[1]) * unit);
}

/** Go-style durations (`48h`, `1h30m`, `90s`, `7d`) → milliseconds. */
export function parseDuration(flag: string, text: string): number {
  const ms = durationMs(text);
  if (ms === undefined) throw usage(`${flag} "${text}": expected a duration such as 48h, 30m or 1h30m`);
  return ms;
}

/** A positive integer flag value. */
export function parsePositiveInt(flag: string, text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw usage(`${flag} "${text}": expected a positive integer`);
  return n;
}

/** Human-readable bytes for tables. */
export { formatBytes } from '../bytes.js';
