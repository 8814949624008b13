/**
 * A scan of JSON text for what JSON.parse cannot tell us: where a syntax
 * error is (its messages differ between Node versions and often carry no
 * position), and which objects repeat a key (JSON.parse keeps the last value
 * silently, so a second `"version"` or two ops of one name would change a
 * build without a word). Everything is reported at its JSON path.
 *
 * The scan runs on every definition, so it is one linear pass with an
 * explicit stack: deep nesting costs memory rather than call-stack depth, and
 * long strings are skipped by a native regular expression rather than a
 * character at a time.
 */
import { fieldPath, indexPath } from './check.js';

/** Where a JSON text breaks the grammar (1-based line and column), and why. */
export interface JsonSyntaxProblem {
  readonly line: number;
  readonly column: number;
  readonly message: string;
  /** The JSON path of the value being read when the text broke ('' = the root). */
  readonly path: string;
}

/** A key an object holds more than once; `path` is the path of the repeat. */
export interface DuplicateKey {
  readonly path: string;
  readonly key: string;
}

/** What a scan found: a syntax error (then nothing else), or every duplicate key and large number. */
export interface JsonScan {
  readonly problem?: JsonSyntaxProblem;
  readonly duplicates: readonly DuplicateKey[];
  /**
   * The text of each number literal whose value is beyond
   * Number.MAX_SAFE_INTEGER, by JSON path: JSON.parse rounds such a number
   * to a double, and a nanosecond timestamp needs the digits as written.
   */
  readonly largeNumbers: ReadonlyMap<string, string>;
}

/** Options of scanJson. */
export interface ScanOptions {
  /**
   * Stop at the string that holds this offset and report it as a problem
   * with `message`: how an offset found by other means (an invalid UTF-8
   * byte) is given its JSON path.
   */
  readonly stopAt?: { readonly offset: number; readonly message: string };
}

class Stop extends Error {
  readonly offset: number;
  constructor(offset: number, message: string) {
    super(message);
    this.offset = offset;
  }
}

/** An open object or array: its path segment in the parent, and what it has read so far. */
interface Frame {
  readonly close: '}' | ']';
  /** The key or index this container sits at in its parent (undefined for the root). */
  readonly at: string | number | undefined;
  /** Objects: the keys read so far. */
  readonly keys: Set<string>;
  /** Objects: the current key; arrays: the current index. */
  current: string | number | undefined;
}

const NUMBER_RE = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const ESCAPE_RE = /\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})/y;
/** A run of string characters that need no attention: not a quote, backslash or control character. */
const PLAIN_RUN_RE = /[^"\\\u0000-\u001f]*/y;
const SPACE_RE = /[ \t\n\r]*/y;

/** The JSON path of the innermost value being read, from the stack of open containers. */
function pathOf(frames: readonly Frame[]): string {
  let path = '';
  for (const frame of frames) {
    if (frame.at !== undefined) path = typeof frame.at === 'number' ? indexPath(path, frame.at) : fieldPath(path, frame.at);
  }
  const top = frames[frames.length - 1];
  if (top?.current === undefined) return path;
  return typeof top.current === 'number' ? indexPath(path, top.current) : fieldPath(path, top.current);
}

/** Scans `text` once: its first syntax error, else every repeated key, each with its JSON path. */
export function scanJson(text: string, options: ScanOptions = {}): JsonScan {
  const frames: Frame[] = [];
  const duplicates: DuplicateKey[] = [];
  const largeNumbers = new Map<string, string>();
  const stopAt = options.stopAt;
  let i = 0;

  const stop = (message: string): never => {
    throw new Stop(i, message);
  };
  const unexpected = (): never => {
    const ch = text[i];
    if (ch === undefined) return stop('unexpected end of input');
    if (ch === '/') return stop('unexpected "/" (JSON has no comments)');
    if (ch === "'") return stop(`unexpected "'" (JSON strings use double quotes)`);
    return stop(`unexpected ${JSON.stringify(ch)}`);
  };
  const space = (): void => {
    SPACE_RE.lastIndex = i;
    SPACE_RE.test(text);
    i = SPACE_RE.lastIndex;
  };
  /** Reads a string at `i` (on its opening quote); returns its raw text between the quotes. */
  const string = (): string => {
    const start = ++i;
    for (;;) {
      PLAIN_RUN_RE.lastIndex = i;
      PLAIN_RUN_RE.test(text);
      i = PLAIN_RUN_RE.lastIndex;
      const ch = text[i];
      if (ch === undefined) stop('unterminated string');
      else if (ch === '"') break;
      else if (ch === '\\') {
        ESCAPE_RE.lastIndex = i;
        if (!ESCAPE_RE.test(text)) stop('invalid escape sequence in a string');
        i = ESCAPE_RE.lastIndex;
      } else stop('unescaped control character in a string (write \\n, \\t, ...)');
    }
    return text.slice(start, i++);
  };
  /** Stops when the string just read (ending before `i`, `length` long) holds `stopAt`. */
  const stopIfHolds = (length: number): void => {
    if (stopAt !== undefined && stopAt.offset >= i - length - 1 && stopAt.offset < i) throw new Stop(stopAt.offset, stopAt.message);
  };
  /** Reads a key and its colon, and records it in the innermost object. */
  const key = (frame: Frame): void => {
    space();
    if (text[i] !== '"') stop('expected a property name in double quotes');
    const raw = string();
    // Only an escaped key needs decoding ("a" and "\u0061" are the same key).
    const name = raw.includes('\\') ? (JSON.parse(`"${raw}"`) as string) : raw;
    frame.current = name;
    stopIfHolds(raw.length);
    if (frame.keys.has(name)) duplicates.push({ path: pathOf(frames), key: name });
    else frame.keys.add(name);
    space();
    if (text[i] !== ':') stop('expected ":" after the property name');
    i++;
  };
  /** Reads a scalar, or opens a container (its members are read by the main loop). */
  const value = (): void => {
    space();
    const ch = text[i];
    if (ch === '{' || ch === '[') {
      const parent = frames[frames.length - 1];
      frames.push({ close: ch === '{' ? '}' : ']', at: parent?.current, keys: new Set(), current: undefined });
      i++;
      return;
    }
    if (ch === '"') {
      stopIfHolds(string().length);
      return;
    }
    for (const word of ['true', 'false', 'null']) {
      if (text.startsWith(word, i)) {
        i += word.length;
        return;
      }
    }
    NUMBER_RE.lastIndex = i;
    if (ch !== undefined && /[-\d]/.test(ch) && NUMBER_RE.test(text)) {
      const start = i;
      i = NUMBER_RE.lastIndex;
      const literal = text.slice(start, i);
      // 2^53 has 16 digits: a shorter literal without an exponent is exact as a double.
      if ((literal.length >= 16 || /[eE]/.test(literal)) && Math.abs(Number(literal)) > Number.MAX_SAFE_INTEGER) largeNumbers.set(pathOf(frames), literal);
      return;
    }
    unexpected();
  };

  try {
    value();
    // Each turn reads the first member of a container just opened, or what
    // follows a member: a comma and the next member, or the closing bracket.
    for (let opened = frames.length > 0; frames.length > 0; ) {
      const frame = frames[frames.length - 1] as Frame;
      space();
      if (opened && text[i] === frame.close) {
        frames.pop();
        i++;
        opened = false;
        continue;
      }
      if (!opened) {
        if (text[i] === frame.close) {
          frames.pop();
          i++;
          continue;
        }
        if (text[i] !== ',') stop(`expected "," or "${frame.close}" after ${frame.close === '}' ? 'a property value' : 'an array element'}`);
        i++;
        space();
        if (text[i] === frame.close) stop(`trailing comma before "${frame.close}"`);
      }
      if (frame.close === '}') key(frame);
      else frame.current = frame.current === undefined ? 0 : (frame.current as number) + 1;
      const depth = frames.length;
      value();
      opened = frames.length > depth;
    }
    space();
    if (i < text.length) stop(`unexpected ${JSON.stringify(text[i])} after the end of the JSON value`);
    return { duplicates, largeNumbers };
  } catch (err) {
    if (!(err instanceof Stop)) throw err;
    return { problem: { ...lineAndColumn(text, err.offset), message: err.message, path: pathOf(frames) }, duplicates: [], largeNumbers: new Map() };
  }
}

/** The 1-based line and column of `offset` in `text`. */
function lineAndColumn(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  for (let at = text.indexOf('\n'); at !== -1 && at < offset; at = text.indexOf('\n', at + 1)) line++;
  return { line, column: offset - text.lastIndexOf('\n', offset - 1) };
}

/**
 * The number of keys written in valid JSON `text` (repeats included). Quotes
 * outside strings only ever open one, so walking from quote to closing quote
 * with the native indexOf finds every string token; a string followed by a
 * colon is a key. Linear, and no regex backtracking on long strings.
 */
export function countKeyTokens(text: string): number {
  let keys = 0;
  let open = text.indexOf('"');
  while (open !== -1) {
    let close = text.indexOf('"', open + 1);
    // A quote preceded by an odd run of backslashes is escaped.
    while (close !== -1 && isEscaped(text, close)) close = text.indexOf('"', close + 1);
    if (close === -1) return keys;
    let next = close + 1;
    while (next < text.length && ' \t\n\r'.includes(text[next] as string)) next++;
    if (text[next] === ':') keys++;
    open = text.indexOf('"', next);
  }
  return keys;
}

function isEscaped(text: string, at: number): boolean {
  let backslashes = 0;
  for (let k = at - 1; k >= 0 && text[k] === '\\'; k--) backslashes++;
  return backslashes % 2 === 1;
}

/** What the parse of a JSON text may have lost, found in the parsed value. */
export interface ParsedFacts {
  /** The keys its objects hold: fewer than {@link countKeyTokens} of its text means some object repeated a key. */
  readonly keys: number;
  /** Whether it holds a number beyond Number.MAX_SAFE_INTEGER, which JSON.parse may have rounded. */
  readonly largeNumbers: boolean;
}

/** The {@link ParsedFacts} of a parsed JSON value. Iterative: parsed JSON may nest deeper than the call stack. */
export function parsedFacts(value: unknown): ParsedFacts {
  let keys = 0;
  let largeNumbers = false;
  const todo: unknown[] = [value];
  while (todo.length > 0) {
    const v = todo.pop();
    if (typeof v === 'number' && Math.abs(v) > Number.MAX_SAFE_INTEGER) largeNumbers = true;
    if (typeof v !== 'object' || v === null) continue;
    if (Array.isArray(v)) {
      for (const item of v) todo.push(item);
      continue;
    }
    const record = v as Record<string, unknown>;
    for (const key of Object.keys(record)) {
      keys++;
      todo.push(record[key]);
    }
  }
  return { keys, largeNumbers };
}

