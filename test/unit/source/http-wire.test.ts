/**
 * The http source's own HTTP/1.1 client (src/source/http/wire.ts) against
 * servers on 127.0.0.1 that this process starts: raw TCP servers that
 * write exact bytes (framings node's server would not send: a body ending
 * with the connection, a 1xx head, the body in the head's packet) and
 * node's server for chunked bodies and a body large enough that the reader
 * pauses the socket. Each download is checked byte for byte and by digest.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { download, type Downloaded } from '../../../src/source/http/download.js';
import { get, requestHead } from '../../../src/source/http/wire.js';

/** A TCP server on 127.0.0.1 that answers every connection with `respond`, after the request head. */
async function rawServer(respond: (socket: Socket, head: string) => void): Promise<{ origin: string; server: Server }> {
  const server = createServer((socket) => {
    let head = '';
    socket.on('data', (chunk: Buffer) => {
      head += chunk.toString('latin1');
      if (head.includes('\r\n\r\n')) respond(socket, head);
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

const sha256 = (bytes: Uint8Array): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

describe('http source wire client', () => {
  let dir: string;
  const servers: Server[] = [];
  const fetch = (url: string) => download({ url: new URL(url), headers: {}, dir, signal: AbortSignal.timeout(30_000), site: { op: 'x', field: 'ops.x.source.identifier' } }) as Promise<Downloaded>;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-unit-wire-'));
  });
  after(async () => {
    for (const server of servers) server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('writes the request head: path and query, host with port, lower-case headers, connection close; Basic auth from URL credentials', () => {
    const head = requestHead(new URL('http://u%20ser:p%40ss@127.0.0.1:8080/a/b?x=1#frag'), { 'user-agent': 'kiln', 'X-Api': '2' });
    const lines = head.split('\r\n');
    assert.equal(lines[0], 'GET /a/b?x=1 HTTP/1.1');
    assert.ok(lines.includes('host: 127.0.0.1:8080'));
    assert.ok(lines.includes('x-api: 2'));
    assert.ok(lines.includes(`authorization: Basic ${Buffer.from('u ser:p@ss').toString('base64')}`));
    assert.ok(head.endsWith('connection: close\r\n\r\n'));
    // An explicit Authorization wins over the URL's credentials.
    assert.ok(requestHead(new URL('http://a:b@h/'), { authorization: 'Bearer t' }).includes('authorization: Bearer t\r\n'));
  });

  it('refuses a header value that would split the request, naming the header and not its value', () => {
    assert.throws(
      () => requestHead(new URL('http://h/'), { authorization: 'Bearer secret-value\r\nX-Injected: 1' }),
      (err: unknown) => err instanceof Error && (err as NodeJS.ErrnoException).code === 'ERR_INVALID_CHAR' && err.message.includes('authorization') && !err.message.includes('secret-value'),
    );
    assert.throws(() => requestHead(new URL('http://h/'), { 'bad name': 'v' }), /invalid header name/);
  });

  it('reads a body that ends with the connection (no length), after a 100 Continue head, with the body in the head packet', async () => {
    const body = Buffer.from('x'.repeat(100_000));
    const { origin, server } = await rawServer((socket) => {
      socket.end(Buffer.concat([Buffer.from('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nETag: "e1"\r\nConnection: close\r\n\r\n'), body]));
    });
    servers.push(server);
    const got = await fetch(`${origin}/f`);
    assert.equal(got.size, body.byteLength);
    assert.equal(got.digest, sha256(body));
    assert.equal(got.validators.etag, '"e1"');
    assert.deepEqual(await readFile(got.file), body);
    await rm(got.file);
  });

  it('reads a chunked body and a 40 MiB body whose writes pause the socket, byte for byte', async () => {
    const pieces = Array.from({ length: 50 }, (_, i) => Buffer.alloc(10_000 + i * 997, i));
    const big = Buffer.alloc(40 * 1024 * 1024);
    for (let i = 0; i < big.byteLength; i += 4) big.writeUInt32LE(i, i);
    const server = createHttpServer((req, res) => {
      if (req.url === '/chunked') {
        res.writeHead(200);
        for (const piece of pieces) res.write(piece);
        res.end();
      } else res.writeHead(200, { 'content-length': big.byteLength }).end(big);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    servers.push(server);
    const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const chunked = await fetch(`${origin}/chunked`);
    const whole = Buffer.concat(pieces);
    assert.equal(chunked.digest, sha256(whole));
    assert.deepEqual(await readFile(chunked.file), whole);
    await rm(chunked.file);
    const large = await fetch(`${origin}/large`);
    assert.equal(large.size, big.byteLength);
    assert.equal(large.digest, sha256(big));
    assert.ok((await readFile(large.file)).equals(big));
    await rm(large.file);
  });

  it('a connection closed mid-body, or a response that is not HTTP, fails the read with a code the retry logic knows', async () => {
    const { origin, server } = await rawServer((socket) => {
      socket.end('HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly this');
    });
    servers.push(server);
    const res = await get({ url: new URL(`${origin}/f`), headers: {}, signal: AbortSignal.timeout(10_000), idleTimeoutMs: 10_000 });
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['content-length'], '1000');
    const received: string[] = [];
    const failure = await new Promise<unknown>((resolve) => res.read({ data: (c) => received.push(c.toString()), end: () => resolve(undefined), error: resolve }));
    assert.equal(received.join(''), 'only this');
    assert.equal((failure as NodeJS.ErrnoException).code, 'ECONNRESET');

    const garbage = await rawServer((socket) => socket.end('SSH-2.0-OpenSSH\r\n\r\n'));
    servers.push(garbage.server);
    await assert.rejects(get({ url: new URL(`${garbage.origin}/f`), headers: {}, signal: AbortSignal.timeout(10_000), idleTimeoutMs: 10_000 }), /invalid HTTP response/);
  });
});
