/**
 * The registry client against a scripted HTTP peer, for what a stock
 * docker-registry will not do on demand: bearer-token auth (which would need
 * a JWT-signing token server), failures that pass (503, 429, resets, bodies
 * cut short) and failures that do not.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseReference } from '../../../../src/content/reference.js';
import { RegistryClient, type RegistryClientOptions } from '../../../../src/content/registry/client.js';
import { ContentStore } from '../../../../src/content/store.js';
import { type Descriptor, MEDIA_TYPES } from '../../../../src/content/types.js';
import { sha256 } from '../../../../src/digest.js';
import { ERROR_CODES, KilnError } from '../../../../src/errors.js';

/** What the peer saw of one request. */
interface Seen {
  readonly method: string;
  readonly url: URL;
  readonly authorization: string | undefined;
  readonly body: Buffer;
}

/** A scripted registry: `handle` gets each request and how many came before it. */
interface Peer {
  readonly host: string;
  readonly seen: Seen[];
  /** Connections that did not speak HTTP (a TLS handshake, say). */
  clientErrors(): number;
  close(): Promise<void>;
}

async function startPeer(handle: (req: IncomingMessage, res: ServerResponse, seen: readonly Seen[]) => void): Promise<Peer> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    // Read the whole request body before answering, as a registry does.
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const before = [...seen];
      seen.push({ method: req.method ?? '', url: new URL(req.url ?? '/', 'http://peer'), authorization: req.headers.authorization, body: Buffer.concat(chunks) });
      handle(req, res, before);
    });
  });
  let clientErrors = 0;
  server.on('clientError', (_err, socket) => {
    clientErrors++;
    // What node's http server (and docker-registry) answer bytes that are not HTTP with.
    socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    host: `127.0.0.1:${port}`,
    seen,
    clientErrors: () => clientErrors,
    async close() {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}

const MANIFEST = Buffer.from(
  JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociManifest, config: { mediaType: MEDIA_TYPES.ociConfig, digest: sha256('{}'), size: 2 }, layers: [] }),
);
const BLOB = Buffer.from('the bytes of a layer, long enough to be cut in half');
const BLOB_DESC: Descriptor = { mediaType: MEDIA_TYPES.ociLayer, digest: sha256(BLOB), size: BLOB.length };

function sendManifest(res: ServerResponse): void {
  res.writeHead(200, { 'content-type': MEDIA_TYPES.ociManifest, 'docker-content-digest': sha256(MANIFEST), 'content-length': MANIFEST.length });
  res.end(MANIFEST);
}

function sendBlob(res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BLOB.length });
  res.end(BLOB);
}

/** Asserts that `promise` rejects with a KilnError of `code` whose message matches. */
async function rejectsWith(promise: Promise<unknown>, code: string, message: RegExp | string): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof KilnError, String(err));
    assert.equal(err.code, code, err.message);
    if (typeof message === 'string') assert.equal(err.message, message);
    else assert.match(err.message, message);
    return true;
  });
}

describe('RegistryClient protocol', () => {
  let dir: string;
  let configs = 0;
  const peers: Peer[] = [];
  const peer = async (handle: Parameters<typeof startPeer>[0]): Promise<Peer> => {
    const p = await startPeer(handle);
    peers.push(p);
    return p;
  };
  /** A client for `host` over plain HTTP, with config.json holding `auths`. */
  const clientFor = async (host: string, auths: Record<string, unknown> = {}, options: RegistryClientOptions = {}): Promise<RegistryClient> => {
    const dockerConfig = path.join(dir, `config-${configs++}.json`);
    await fs.writeFile(dockerConfig, JSON.stringify({ auths }));
    return new RegistryClient({ insecureHosts: [host], dockerConfig, ...options });
  };
  const paths = (p: Peer): string[] => p.seen.map((s) => `${s.method} ${s.url.pathname}`);

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-registry-peer-'));
  });
  after(async () => {
    for (const p of peers) await p.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('gets a bearer token from the realm with basic credentials, caches it per scope, and sends it up front', async () => {
    let host = '';
    const p = await peer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://peer');
      if (url.pathname === '/token') {
        const scopes = url.searchParams.getAll('scope').join(' ');
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ access_token: `tok ${scopes}`, expires_in: 300 }));
        return;
      }
      if (req.headers.authorization?.startsWith('Bearer tok ') !== true) {
        res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${host}/token",service="peer.test",scope="repository:team/app:pull"` });
        res.end();
        return;
      }
      if (req.method === 'PUT') {
        res.writeHead(201, { 'docker-content-digest': sha256(MANIFEST) });
        res.end();
        return;
      }
      sendManifest(res);
    });
    host = p.host;
    const client = await clientFor(host, { [host]: { auth: Buffer.from('alice:pw').toString('base64') } });
    const app = parseReference(`${host}/team/app:1.0`);

    const fetched = await client.fetchManifest(app, '1.0');
    assert.deepEqual(fetched.descriptor, { mediaType: MEDIA_TYPES.ociManifest, digest: sha256(MANIFEST), size: MANIFEST.length });
    assert.deepEqual(paths(p), ['GET /v2/team/app/manifests/1.0', 'GET /token', 'GET /v2/team/app/manifests/1.0']);
    const token = p.seen[1];
    assert.equal(token?.url.searchParams.get('service'), 'peer.test');
    assert.deepEqual(token?.url.searchParams.getAll('scope'), ['repository:team/app:pull']);
    assert.equal(token?.url.searchParams.get('account'), 'alice');
    assert.equal(token?.authorization, `Basic ${Buffer.from('alice:pw').toString('base64')}`);
    assert.equal(p.seen[2]?.authorization, 'Bearer tok repository:team/app:pull');

    // The same scope again: the cached token goes with the first request.
    await client.fetchManifest(app, '1.0');
    assert.equal(p.seen.length, 4);
    assert.equal(p.seen[3]?.authorization, 'Bearer tok repository:team/app:pull');

    // Pushing needs a new scope: a token for it is fetched before the PUT, with no 401 round.
    assert.equal(await client.pushManifest(app, '2.0', MEDIA_TYPES.ociManifest, MANIFEST), sha256(MANIFEST));
    assert.deepEqual(paths(p).slice(4), ['GET /token', 'PUT /v2/team/app/manifests/2.0']);
    assert.deepEqual(p.seen[4]?.url.searchParams.getAll('scope'), ['repository:team/app:pull,push']);
    assert.equal(p.seen[5]?.authorization, 'Bearer tok repository:team/app:pull,push');
  });

  it('answers a 401 once, and names the token server when it refuses', async () => {
    let host = '';
    const refused = await peer((req, res) => {
      if (req.url?.startsWith('/token') === true) {
        res.writeHead(401).end();
        return;
      }
      res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${host}/token",service="peer.test"` }).end();
    });
    host = refused.host;
    await rejectsWith(
      (await clientFor(host)).fetchManifest(parseReference(`${host}/app:1`), '1'),
      ERROR_CODES.REGISTRY,
      `${host}'s token server http://${host} refused a token (401): add credentials for ${host} to ${path.join(dir, `config-${configs - 1}.json`)}`,
    );

    let host2 = '';
    const alwaysUnauthorized = await peer((req, res) => {
      if (req.url?.startsWith('/token') === true) {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: 'useless' }));
        return;
      }
      res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${host2}/token"` }).end();
    });
    host2 = alwaysUnauthorized.host;
    await rejectsWith((await clientFor(host2)).fetchManifest(parseReference(`${host2}/app:1`), '1'), ERROR_CODES.REGISTRY, /app:1: authentication required \(401\)/);
    assert.deepEqual(paths(alwaysUnauthorized), ['GET /v2/app/manifests/1', 'GET /token', 'GET /v2/app/manifests/1']);
    assert.equal(alwaysUnauthorized.seen[2]?.authorization, 'Bearer useless');
  });

  it('retries 503 and 429 with backoff, then succeeds', async () => {
    const p = await peer((_req, res, before) => {
      if (before.length === 0) res.writeHead(503).end();
      else if (before.length === 1) res.writeHead(429).end();
      else sendBlob(res);
    });
    const store = new ContentStore(path.join(dir, 'root-503'));
    const started = Date.now();
    await (await clientFor(p.host)).fetchBlob(parseReference(`${p.host}/app`), BLOB_DESC, store);
    assert.ok(Date.now() - started >= 550, 'backs off 200 then 400 ms');
    assert.equal(p.seen.length, 3);
    assert.deepEqual(await store.readBytes(BLOB_DESC.digest), BLOB);
  });

  it('retries connection resets and bodies cut short', async () => {
    const p = await peer((req, res, before) => {
      if (req.url?.includes('/manifests/') === true) {
        if (before.length < 2) req.socket.destroy();
        else sendManifest(res);
        return;
      }
      if (before.length === 3) {
        // Promise the whole blob, send half, hang up.
        res.writeHead(200, { 'content-length': BLOB.length });
        res.write(BLOB.subarray(0, 10), () => res.destroy());
        return;
      }
      sendBlob(res);
    });
    const client = await clientFor(p.host);
    const app = parseReference(`${p.host}/app:1`);
    assert.equal((await client.fetchManifest(app, '1')).descriptor.digest, sha256(MANIFEST));
    assert.equal(p.seen.length, 3);
    const store = new ContentStore(path.join(dir, 'root-cut'));
    await client.fetchBlob(app, BLOB_DESC, store);
    assert.equal(p.seen.length, 5);
    assert.deepEqual(await store.readBytes(BLOB_DESC.digest), BLOB);
  });

  it('streams an upload in one PATCH as bytes come, whatever the chunk size, then closes it with the digest', async () => {
    let parts = 0;
    const p = await peer((req, res) => {
      if (req.method === 'POST') res.writeHead(202, { location: '/v2/app/blobs/uploads/s?_state=0' }).end();
      else if (req.method === 'PATCH') res.writeHead(202, { location: `/v2/app/blobs/uploads/s?_state=${++parts}` }).end();
      else res.writeHead(201, { 'docker-content-digest': BLOB_DESC.digest }).end();
    });
    const client = await clientFor(p.host, {}, { uploadChunkSize: 20 });
    const upload = await client.startUpload(parseReference(`${p.host}/app`));
    for (let at = 0; at < BLOB.length; at += 8) await upload.write(BLOB.subarray(at, at + 8));
    await upload.finish(BLOB_DESC.digest);
    // A PATCH per chunk would stop the writer at each chunk's end until the registry answered.
    assert.deepEqual(
      p.seen.map((s) => `${s.method} ${s.url.searchParams.get('_state') ?? ''} ${s.body.length}`),
      ['POST  0', `PATCH 0 ${BLOB.length}`, 'PUT 1 0'],
    );
    assert.deepEqual(Buffer.concat(p.seen.filter((s) => s.method === 'PATCH').map((s) => s.body)), BLOB);
    assert.equal(p.seen.at(-1)?.url.searchParams.get('digest'), BLOB_DESC.digest);
  });

  it('retries a failed upload from a new session', async () => {
    let sessions = 0;
    let puts = 0;
    const p = await peer((req, res) => {
      if (req.method === 'HEAD') res.writeHead(404).end();
      else if (req.method === 'POST') res.writeHead(202, { location: `/v2/app/blobs/uploads/session-${++sessions}?_state=x` }).end();
      else if (++puts === 1) res.writeHead(503).end();
      else res.writeHead(201, { 'docker-content-digest': BLOB_DESC.digest }).end();
    });
    const store = new ContentStore(path.join(dir, 'root-upload'));
    await store.write(BLOB);
    assert.equal(await (await clientFor(p.host)).pushBlob(parseReference(`${p.host}/app`), BLOB_DESC, store), 'uploaded');
    assert.deepEqual(paths(p), [
      `HEAD /v2/app/blobs/${BLOB_DESC.digest}`,
      'POST /v2/app/blobs/uploads/',
      'PUT /v2/app/blobs/uploads/session-1',
      'POST /v2/app/blobs/uploads/',
      'PUT /v2/app/blobs/uploads/session-2',
    ]);
    const put = p.seen[4];
    assert.equal(put?.url.searchParams.get('digest'), BLOB_DESC.digest);
    assert.equal(put?.url.searchParams.get('_state'), 'x');
    assert.deepEqual(put?.body, BLOB);
  });

  it('does not retry other 4xx answers, and says what the registry said', async () => {
    const p = await peer((_req, res) => {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errors: [{ code: 'MANIFEST_INVALID', message: 'manifest invalid', detail: {} }] }));
    });
    const client = await clientFor(p.host);
    const pushed = client.pushManifest(parseReference(`${p.host}/app:1`), '1', MEDIA_TYPES.ociManifest, MANIFEST);
    await rejectsWith(pushed, ERROR_CODES.REGISTRY, `${p.host}/app:1: manifest invalid (400)`);
    assert.equal(p.seen.length, 1);
  });

  it('gives up after the retries, naming the host', async () => {
    const p = await peer((_req, res) => res.writeHead(503, 'Service Unavailable').end());
    const client = await clientFor(p.host, {}, { retries: 1 });
    await rejectsWith(
      client.fetchBlob(parseReference(`${p.host}/app`), BLOB_DESC, new ContentStore(path.join(dir, 'root-down'))),
      ERROR_CODES.REGISTRY,
      `${p.host}/app@${BLOB_DESC.digest}: ${p.host} answered 503 Service Unavailable, after 2 attempts`,
    );
    assert.equal(p.seen.length, 2);

    const gone = await peer(() => {});
    await gone.close();
    peers.splice(peers.indexOf(gone), 1);
    await rejectsWith(
      (await clientFor(gone.host, {}, { retries: 1 })).fetchManifest(parseReference(`${gone.host}/app:1`), '1'),
      ERROR_CODES.REGISTRY,
      `${gone.host}/app:1: ${gone.host} is unreachable: connection refused (ECONNREFUSED), after 2 attempts`,
    );
  });

  it('speaks HTTPS to hosts not marked insecure, and says how to allow plain HTTP', async () => {
    const p = await peer((_req, res) => sendManifest(res));
    // http = false: HTTPS only, even on loopback.
    const client = new RegistryClient({ dockerConfig: path.join(dir, 'absent.json'), retries: 0, hosts: { [p.host]: { http: false } } });
    const hint = `if ${p.host} speaks plain HTTP, mark it insecure \\(--insecure-registry ${p.host}\\)`;
    const expected = new RegExp(`^${p.host}/app:1: cannot talk to ${p.host}: TLS failed: wrong version number .*; ${hint}$`);
    await rejectsWith(client.fetchManifest(parseReference(`${p.host}/app:1`), '1'), ERROR_CODES.REGISTRY, expected);
    assert.equal(p.seen.length, 0);
  });

  it('tries HTTPS on a loopback host first, falls back to plain HTTP, and remembers that for the process', async () => {
    const basic = `Basic ${Buffer.from('alice:pw').toString('base64')}`;
    const p = await peer((req, res) => (req.headers.authorization === basic ? sendManifest(res) : res.writeHead(401, { 'www-authenticate': 'Basic realm="peer"' }).end()));
    const dockerConfig = path.join(dir, 'loopback.json');
    await fs.writeFile(dockerConfig, JSON.stringify({ auths: { [p.host]: { username: 'alice', password: 'pw' } } }));
    const first = new RegistryClient({ dockerConfig, retries: 0 });
    assert.equal((await first.fetchManifest(parseReference(`${p.host}/app:1`), '1')).descriptor.digest, sha256(MANIFEST));
    // The request resent after the 401 goes over plain HTTP too.
    assert.equal(p.clientErrors(), 1, 'one refused TLS handshake');
    const second = new RegistryClient({ dockerConfig, retries: 0 });
    await second.fetchManifest(parseReference(`${p.host}/app:1`), '1');
    assert.equal(p.clientErrors(), 1, 'the next client goes straight to plain HTTP');
    assert.equal(p.seen.length, 4);
  });

  it('trades an identity token for an access token (OAuth2 refresh-token grant) and never puts it in a URL', async () => {
    let host = '';
    const p = await peer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://peer');
      if (url.pathname === '/token') {
        const form = new URLSearchParams(p.seen.at(-1)?.body.toString() ?? '');
        const ok = req.method === 'POST' && form.get('grant_type') === 'refresh_token' && form.get('refresh_token') === 'refresh-me';
        res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
        res.end(JSON.stringify(ok ? { access_token: `tok ${form.get('scope') ?? ''}`, expires_in: 300, refresh_token: 'refresh-me' } : {}));
        return;
      }
      if (req.headers.authorization !== 'Bearer tok repository:team/app:pull') {
        res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${host}/token",service="peer.test"` });
        res.end();
        return;
      }
      sendManifest(res);
    });
    host = p.host;
    const client = await clientFor(host, { [host]: { identitytoken: 'refresh-me' } });
    await client.fetchManifest(parseReference(`${host}/team/app:1`), '1');
    const token = p.seen.find((s) => s.url.pathname === '/token');
    assert.equal(token?.method, 'POST');
    assert.deepEqual(Object.fromEntries(new URLSearchParams(token.body.toString())), {
      grant_type: 'refresh_token',
      refresh_token: 'refresh-me',
      client_id: 'kiln',
      service: 'peer.test',
      scope: 'repository:team/app:pull',
    });
    assert.ok(p.seen.every((s) => !s.url.href.includes('refresh-me')));
    assert.deepEqual(paths(p), ['GET /v2/team/app/manifests/1', 'POST /token', 'GET /v2/team/app/manifests/1']);

    const refused = await clientFor(host, { [host]: { identitytoken: 'stale' } });
    await rejectsWith(refused.fetchManifest(parseReference(`${host}/team/app:1`), '1'), ERROR_CODES.REGISTRY, /refused a token \(401\): the identity token for .* may have expired: log in again$/);
  });

  it('pulls through mirrors in order, passing over one that fails, and pushes only to the registry', async () => {
    const down = await peer((_req, res) => res.writeHead(503).end());
    const empty = await peer((_req, res) => res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"message":"manifest unknown"}]}'));
    const mirror = await peer((req, res) => (req.url?.includes('/blobs/') === true ? sendBlob(res) : sendManifest(res)));
    const origin = await peer((_req, res) => sendManifest(res));
    const mirrors = [down.host, empty.host, mirror.host];
    const client = await clientFor(origin.host, {}, { insecureHosts: [origin.host, ...mirrors], hosts: { [origin.host]: { mirrors } } });
    const ref = parseReference(`${origin.host}/team/app:1`);
    await client.fetchManifest(ref, '1');
    await client.fetchBlob(ref, BLOB_DESC, new ContentStore(path.join(dir, 'root-mirror')));
    // One attempt each on a mirror: the next one is there.
    assert.equal(down.seen.length, 2);
    assert.deepEqual(paths(mirror), ['GET /v2/team/app/manifests/1', `GET /v2/team/app/blobs/${BLOB_DESC.digest}`]);
    assert.equal(origin.seen.length, 0);

    await mirror.close();
    peers.splice(peers.indexOf(mirror), 1);
    await client.fetchManifest(ref, '1');
    assert.deepEqual(paths(origin), ['GET /v2/team/app/manifests/1']);
  });

  it('refuses schema 1 manifests and manifests that do not match their digest', async () => {
    const schema1 = Buffer.from(JSON.stringify({ schemaVersion: 1, name: 'app', tag: '1', fsLayers: [] }));
    const p = await peer((req, res) => {
      if (req.url?.endsWith('/old') === true) {
        res.writeHead(200, { 'content-type': 'application/vnd.docker.distribution.manifest.v1+prettyjws' }).end(schema1);
        return;
      }
      res.writeHead(200, { 'content-type': MEDIA_TYPES.ociManifest, 'docker-content-digest': sha256('something else') }).end(MANIFEST);
    });
    const client = await clientFor(p.host);
    const app = parseReference(`${p.host}/app`);
    await rejectsWith(client.fetchManifest(app, 'old'), ERROR_CODES.IMAGE, /app:old: this is a Docker schema 1 manifest, which kiln does not read/);
    const mismatch = new RegExp(`app:new: the manifest served hashes to ${sha256(MANIFEST)}, not ${sha256('something else')}`);
    await rejectsWith(client.fetchManifest(app, 'new'), ERROR_CODES.CONTENT, mismatch);
  });

  it('stops retrying when its signal is aborted, with the signal\'s reason', async () => {
    const p = await peer((_req, res) => res.writeHead(503).end());
    const client = await clientFor(p.host);
    const reason = new Error('build cancelled');
    const controller = new AbortController();
    setTimeout(() => controller.abort(reason), 100);
    await assert.rejects(client.fetchManifest(parseReference(`${p.host}/app:1`), '1', controller.signal), (err: unknown) => err === reason);
    assert.ok(p.seen.length <= 2);
  });
});
