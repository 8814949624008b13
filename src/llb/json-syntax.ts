/**
 * Locating a JSON syntax error. JSON.parse's messages differ between Node
 * versions and often carry no position at all, so when it fails the text is
 * scanned again by this small recognizer, which knows the line, the column and
 * what was expected there.
 */

/** Where a JSON text breaks the grammar (1-based line and column), and why. */
export interface JsonSyntaxProblem {
  readonly line: number;
  readonly column: number;
  readonly message: string;
}

class Stop extends Error {
  readonly offset: number;
  constructor(offset: number, message: string) {
    super(message);
    this.offset = offset;
  }
}

const NUMBER_RE = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const ESCAPE_RE = /\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})/y;

/** The first syntax error in `text`, or undefined when it is valid JSON. */
export function findJsonSyntaxError(text: string): JsonSyntaxProblem | undefined {
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
    while (text[i] === ' ' || text[i] === '\t' || text[i] === '\n' || text[i] === '\r') i++;
  };
  const expect = (ch: string, message: string): void => {
    space();
    if (text[i] !== ch) stop(message);
    i++;
  };
  const string = (): void => {
    i++; // the opening quote
    for (;;) {
      const ch = text[i];
      if (ch === undefined) stop('unterminated string');
      else if (ch === '"') break;
      else if (ch === '\\') {
        ESCAPE_RE.lastIndex = i;
        if (!ESCAPE_RE.test(text)) stop('invalid escape sequence in a string');
        i = ESCAPE_RE.lastIndex;
        continue;
      } else if (ch < ' ') stop('unescaped control character in a string (write \\n, \\t, ...)');
      i++;
    }
    i++;
  };
  // `close` is the closing bracket; `item` reads one member or element.
  const sequence = (close: string, item: () => void, what: string): void => {
    i++; // the opening bracket
    space();
    if (text[i] === close) {
      i++;
      return;
    }
    for (;;) {
      item();
      space();
      if (text[i] === close) break;
      if (text[i] !== ',') stop(`expected "," or "${close}" after ${what}`);
      i++;
      space();
      if (text[i] === close) stop(`trailing comma before "${close}"`);
    }
    i++;
  };
  const member = (): void => {
    space();
    if (text[i] !== '"') stop('expected a property name in double quotes');
    string();
    expect(':', 'expected ":" after the property name');
    value();
  };
  const value = (): void => {
    space();
    const ch = text[i];
    if (ch === '{') return sequence('}', member, 'a property value');
    if (ch === '[') return sequence(']', value, 'an array element');
    if (ch === '"') return string();
    for (const word of ['true', 'false', 'null']) {
      if (text.startsWith(word, i)) {
        i += word.length;
        return;
      }
    }
    NUMBER_RE.lastIndex = i;
    if (ch !== undefined && /[-\d]/.test(ch) && NUMBER_RE.test(text)) {
      i = NUMBER_RE.lastIndex;
      return;
    }
    unexpected();
  };

  try {
    value();
    space();
    if (i < text.length) stop(`unexpected ${JSON.stringify(text[i])} after the end of the JSON value`);
    return undefined;
  } catch (err) {
    if (!(err instanceof Stop)) throw err;
    const before = text.slice(0, err.offset);
    const line = before.split('\n').length;
    return { line, column: err.offset - before.lastIndexOf('\n'), message: err.message };
  }
}
