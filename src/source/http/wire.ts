/**
 * One HTTP/1.1 GET on a connection of its own (plain or TLS), for the http
 * source. The response is parsed by http-parser-js; a plain connection
 * reads into one reused buffer (the socket's `onread`), so a download makes
 * no garbage per chunk and each byte is still in the CPU's cache when it is
 * hashed and copied. node:http allocates a new 64 KiB buffer for every
 * socket read and passes it through a stream: a 200 MiB body cost about
 * three times the CPU of this path, most of it in the garbage collector of
 * a process as big as a build.
 *
 * The body is pushed to a BodyReader; a chunk is valid only during the
 * call (the buffer is read into again). Reading pauses after the head
 * until the reader is attached; body bytes that came in the same read as
 * the head are copied and kept for it.
 */
import net from 'node:net';
import tls from 'node:tls';
import { HTTPParser } from 'http-parser-js';

/** The size of a plain connection's reused read buffer (256 KiB measured best: fewer syscalls, still in L2). */
const READ_BUFFER_BYTES = 256 * 1024;

/** One GET. */
export interface WireRequest {
  readonly url: URL;
  /** Header names in lower case; `host` and `connection` are set here. */
  readonly headers: Readonly<Record<string, string>>;
  readonly signal: AbortSignal;
  /** A connection silent this long (connect, head or body) fails with ETIMEDOUT. */
  readonly idleTimeoutMs: number;
  /** The CAs an https: URL's server is checked against. */
  readonly secureContext?: tls.SecureContext;
}

/** Receives a response body. */
export interface BodyReader {
  /** A piece of the body; the bytes are valid only during the call. */
  data(chunk: Buffer): void;
  /** The body ended as its framing said. */
  end(): void;
  /** The connection failed, timed out or was aborted before the body ended. */
  error(err: unknown): void;
}

/** A response whose head has arrived. */
export interface WireResponse {
  readonly statusCode: number;
  readonly statusMessage: string;
  /** Header names in lower case; repeated headers joined with ", ". */
  readonly headers: Readonly<Record<string, string | undefined>>;
  /** Starts delivering the body to `reader` (once). */
  read(reader: BodyReader): void;
  /** Stops reading the socket (chunks already read are still delivered). */
  pause(): void;
  resume(): void;
  /** Closes the connection, the rest of the body unread. */
  close(): void;
}

/** The form of an error node's own client would have given. */
function codedError(message: string, code: string): Error {
  return Object.assign(new Error(message), { code });
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const FIELD_VALUE = /^[^\x00-\x08\x0a-\x1f\x7f]*$/;

/** The request head; a header that could split it is refused, naming the header, never its value. */
export function requestHead(url: URL, headers: Readonly<Record<string, string>>): string {
  const lines = [`GET ${url.pathname === '' ? '/' : url.pathname}${url.search} HTTP/1.1`, `host: ${url.host}`];
  const all: Record<string, string> = { ...headers };
  if ((url.username !== '' || url.password !== '') && all['authorization'] === undefined) {
    // As node's client does for a URL with credentials: Basic auth.
    all['authorization'] = `Basic ${Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString('base64')}`;
  }
  for (const [name, value] of Object.entries(all)) {
    const lower = name.toLowerCase();
    if (lower === 'host' || lower === 'connection' || lower === 'content-length' || lower === 'transfer-encoding') continue;
    if (!TOKEN.test(name)) throw codedError(`invalid header name ${JSON.stringify(name)}`, 'ERR_INVALID_HTTP_TOKEN');
    if (!FIELD_VALUE.test(value)) throw codedError(`invalid character in the value of header "${lower}"`, 'ERR_INVALID_CHAR');
    lines.push(`${lower}: ${value}`);
  }
  lines.push('connection: close', '', '');
  return lines.join('\r\n');
}

/** Lower-case names to values, from the parser's flat [name, value, ...] list. */
function headerRecord(flat: readonly string[]): Record<string, string> {
  const headers: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const name = (flat[i] as string).toLowerCase();
    const value = flat[i + 1] as string;
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
  }
  return headers;
}

interface Head {
  readonly statusCode: number;
  readonly statusMessage: string;
  readonly headers: readonly string[];
}

/** The head from either calling convention of the parser's headers-complete callback. */
function headOf(args: readonly unknown[]): Head {
  const first = args[0];
  if (typeof first === 'object' && first !== null) return first as Head;
  return { headers: args[2] as string[], statusCode: args[5] as number, statusMessage: args[6] as string };
}

/** Sends the GET; resolves with the response once its head has arrived. */
export function get(request: WireRequest): Promise<WireResponse> {
  return new Promise((resolve, reject) => {
    const { url } = request;
    let head: string;
    try {
      head = requestHead(url, request.headers);
    } catch (err) {
      reject(err);
      return;
    }
    const secure = url.protocol === 'https:';
    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    const port = url.port === '' ? (secure ? 443 : 80) : Number(url.port);

    let response: WireResponse | undefined;
    let reader: BodyReader | undefined;
    /** Body bytes that came before the reader (copies). */
    let early: Buffer[] = [];
    let complete = false;
    let failure: unknown;
    let done = false;
    let informational = false;

    const parser = new HTTPParser(HTTPParser.RESPONSE);
    parser[HTTPParser.kOnHeadersComplete] = (...args: unknown[]): number => {
      const { statusCode, statusMessage, headers } = headOf(args);
      // 1xx heads come before the real one; 204 and 304 have no body.
      informational = statusCode < 200;
      if (informational) return 1;
      response = {
        statusCode,
        statusMessage,
        headers: headerRecord(headers),
        read: (r) => {
          reader = r;
          for (const chunk of early) r.data(chunk);
          early = [];
          if (failure !== undefined) r.error(failure);
          else if (complete) r.end();
          else socket.resume();
        },
        pause: () => socket.pause(),
        resume: () => {
          if (!done) socket.resume();
        },
        close: () => finish(),
      };
      // Until a reader comes, only the rest of this read is kept.
      socket.pause();
      resolve(response);
      return statusCode === 204 || statusCode === 304 ? 1 : 0;
    };
    parser[HTTPParser.kOnBody] = (chunk: Buffer): void => {
      if (done) return;
      if (reader !== undefined) reader.data(chunk);
      else {
        const copy = Buffer.allocUnsafe(chunk.byteLength);
        chunk.copy(copy);
        early.push(copy);
      }
    };
    parser[HTTPParser.kOnMessageComplete] = (): void => {
      if (informational) {
        informational = false;
        return;
      }
      complete = true;
      finish();
      reader?.end();
    };

    const feed = (buffer: Buffer, length: number): void => {
      if (done) return;
      const parsed = parser.execute(buffer, 0, length);
      if (parsed instanceof Error) fail(codedError(`the server sent an invalid HTTP response: ${parsed.message}`, 'HPE_INVALID'));
    };
    const readBuffer = secure ? undefined : Buffer.allocUnsafe(READ_BUFFER_BYTES);
    const socket =
      readBuffer === undefined
        ? tls.connect({ host, port, ...(net.isIP(host) === 0 ? { servername: host } : {}), ...(request.secureContext === undefined ? {} : { secureContext: request.secureContext }), ALPNProtocols: ['http/1.1'] })
        : net.connect({
            host,
            port,
            onread: {
              buffer: readBuffer,
              callback: (length) => {
                feed(readBuffer, length);
                return true;
              },
            },
          });
    if (secure) socket.on('data', (chunk: Buffer) => feed(chunk, chunk.byteLength));

    /** Ends the exchange: no more reading, the connection closed, the abort listener gone. */
    function finish(): void {
      if (done) return;
      done = true;
      request.signal.removeEventListener('abort', onAbort);
      socket.destroy();
    }
    function fail(err: unknown): void {
      if (done) return;
      finish();
      failure = err;
      if (response === undefined) reject(err);
      else reader?.error(err);
    }
    function onAbort(): void {
      fail(request.signal.reason);
    }

    if (request.signal.aborted) {
      fail(request.signal.reason);
      return;
    }
    request.signal.addEventListener('abort', onAbort, { once: true });
    socket.setTimeout(request.idleTimeoutMs, () => fail(codedError(`no data for ${request.idleTimeoutMs / 1000} s`, 'ETIMEDOUT')));
    socket.on('error', fail);
    // A body without a length ends with the connection (the parser then completes it).
    socket.on('end', () => {
      if (!done) parser.finish();
    });
    socket.on('close', () => {
      if (!complete) fail(codedError(response === undefined ? 'the connection closed before a response' : 'the connection closed before the body ended', 'ECONNRESET'));
    });
    socket.write(head);
  });
}
