/**
 * A file server for HTTP source tests and benches, on 127.0.0.1 (a free
 * port), plain or TLS. Each path serves one file with an ETag (its sha256)
 * and a Last-Modified, answering conditional requests with 304, or a fixed
 * status, or a redirect. It counts what it was asked and what it sent, and
 * keeps every request's headers, so a test can assert that a second build
 * downloaded nothing and that a secret reached it.
 */
import { createHash } from 'node:crypto';
import { createServer as createHttpServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';

/** What one path answers. */
export type Route =
  | {
      readonly body: Uint8Array | string;
      readonly lastModified?: Date;
      readonly etag?: boolean;
      readonly lastModifiedHeader?: boolean;
      /** Headers sent with the body (and the 304). */
      readonly headers?: Readonly<Record<string, string>>;
      /** Sends the body gzip-compressed, with `Content-Encoding: gzip`, whatever the request accepts. */
      readonly gzip?: boolean;
    }
  | { readonly status: number }
  | { readonly redirect: string; readonly status?: 301 | 302 | 303 | 307 | 308 }
  /** Answers `status` to the first `times` requests, then `then`. */
  | { readonly failFirst: number; readonly status: number; readonly then: Route }
  /** Sends the headers of `body`'s full length, then half the body, then drops the connection. */
  | { readonly cutBody: Uint8Array }
  /** Sends the headers of `body`'s full length and half the body, then nothing (the connection stays open). */
  | { readonly stallBody: Uint8Array }
  /** Takes the request and never answers. */
  | { readonly silent: true };

/** One request the server saw. */
export interface SeenRequest {
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  /** The status it answered. */
  status: number;
}

export interface FileServer extends AsyncDisposable {
  /** `http://127.0.0.1:PORT` or `https://...`. */
  readonly origin: string;
  readonly requests: SeenRequest[];
  /** Body bytes sent, over all requests. */
  bodyBytes: number;
  set(path: string, route: Route): void;
  stop(): Promise<void>;
}

/** Starts a server; with `tls`, HTTPS with that key and certificate. */
export async function startFileServer(options: { readonly tls?: { readonly key: string; readonly cert: string } } = {}): Promise<FileServer> {
  const routes = new Map<string, Route>();
  const failures = new Map<string, number>();
  const requests: SeenRequest[] = [];
  let server: Server;
  const state = {
    bodyBytes: 0,
  };
  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const seen: SeenRequest = { path, headers: req.headers, status: 0 };
    requests.push(seen);
    const answer = (status: number, headers: Record<string, string | number> = {}, body?: Uint8Array): void => {
      seen.status = status;
      res.writeHead(status, headers);
      if (body !== undefined) state.bodyBytes += body.byteLength;
      res.end(body);
    };
    let route = routes.get(path);
    while (route !== undefined && 'failFirst' in route) {
      const failed = failures.get(path) ?? 0;
      if (failed < route.failFirst) {
        failures.set(path, failed + 1);
        return answer(route.status);
      }
      route = route.then;
    }
    if (route === undefined) return answer(404, {}, Buffer.from('not found\n'));
    if ('redirect' in route) return answer(route.status ?? 302, { location: route.redirect });
    if ('cutBody' in route) {
      seen.status = 200;
      res.writeHead(200, { 'content-length': route.cutBody.byteLength });
      res.write(route.cutBody.subarray(0, route.cutBody.byteLength >> 1));
      state.bodyBytes += route.cutBody.byteLength >> 1;
      setTimeout(() => res.destroy(), 20);
      return;
    }
    if ('stallBody' in route) {
      seen.status = 200;
      res.writeHead(200, { 'content-length': route.stallBody.byteLength });
      res.write(route.stallBody.subarray(0, route.stallBody.byteLength >> 1));
      state.bodyBytes += route.stallBody.byteLength >> 1;
      return;
    }
    if ('silent' in route) return;
    if ('status' in route) return answer(route.status, {}, Buffer.from(`status ${route.status}\n`));
    const plain = typeof route.body === 'string' ? Buffer.from(route.body) : route.body;
    const body = route.gzip === true ? gzipSync(plain) : plain;
    const etag = `"${createHash('sha256').update(body).digest('hex')}"`;
    const modified = (route.lastModified ?? new Date('2024-01-02T03:04:05Z')).toUTCString();
    const headers: Record<string, string | number> = { ...route.headers, 'content-length': body.byteLength };
    if (route.gzip === true) headers['content-encoding'] = 'gzip';
    if (route.etag !== false) headers['etag'] = etag;
    if (route.lastModifiedHeader !== false) headers['last-modified'] = modified;
    const ifNoneMatch = req.headers['if-none-match'];
    const ifModifiedSince = req.headers['if-modified-since'];
    const unchanged = route.etag !== false && ifNoneMatch !== undefined ? ifNoneMatch === etag : route.lastModifiedHeader !== false && ifModifiedSince === modified;
    if (unchanged) return answer(304, { ...route.headers, ...(route.etag === false ? {} : { etag }) });
    answer(200, headers, body);
  };
  server = options.tls === undefined ? createHttpServer(handle) : createHttpsServer({ key: options.tls.key, cert: options.tls.cert }, handle);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const stop = async (): Promise<void> => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return {
    origin: `${options.tls === undefined ? 'http' : 'https'}://127.0.0.1:${port}`,
    requests,
    get bodyBytes() {
      return state.bodyBytes;
    },
    set bodyBytes(n: number) {
      state.bodyBytes = n;
    },
    set: (path, route) => routes.set(path, route),
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

/** Makes a test CA and a certificate for 127.0.0.1 signed by it, with `openssl` (Debian's package). */
export async function makeTestCa(dir: string): Promise<{ readonly caFile: string; readonly key: string; readonly cert: string }> {
  const { execa } = await import('execa');
  const { readFile, writeFile } = await import('node:fs/promises');
  const { join } = await import('node:path');
  const at = (name: string) => join(dir, name);
  await execa('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=kiln test CA', '-keyout', at('ca.key'), '-out', at('ca.pem')]);
  await execa('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', at('server.key'), '-out', at('server.csr')]);
  await writeFile(at('ext.cnf'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n');
  await execa('openssl', ['x509', '-req', '-in', at('server.csr'), '-CA', at('ca.pem'), '-CAkey', at('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', at('ext.cnf'), '-out', at('server.pem')]);
  return { caFile: at('ca.pem'), key: await readFile(at('server.key'), 'utf8'), cert: await readFile(at('server.pem'), 'utf8') };
}
