/**
 * A token server for a docker-registry run with token auth (the
 * distribution token spec): it signs JWTs (RS256, the signing certificate
 * in `x5c`) with a key whose CA the registry trusts. It grants what is
 * asked to whoever presents the right identity token in an OAuth2
 * refresh-token grant (POST), or the right user and password (GET, basic
 * auth), and nothing to anyone else. It counts what it was asked.
 */
import { createSign, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type RequestListener } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TestCertificates } from './test-ca.js';

/** A running token server. */
export interface TestTokenServer {
  /** The realm to give the registry: `http(s)://127.0.0.1:PORT/token`. */
  readonly realm: string;
  readonly service: string;
  readonly issuer: string;
  /** What came in: method, the grant (POST) or `basic` (GET), and whether it was granted. */
  readonly requests: { readonly method: string; readonly grant: string; readonly granted: boolean; readonly url: string }[];
  close(): Promise<void>;
}

/** Options of the token server. */
export interface TokenServerOptions {
  readonly certificates: TestCertificates;
  /** The refresh token (identity token) that earns access tokens. */
  readonly identityToken: string;
  /** A user and password that earn access tokens over GET with basic auth. */
  readonly basic?: { readonly user: string; readonly password: string };
  /** Serve HTTPS with the server certificate of `certificates`. */
  readonly https?: boolean;
}

const base64url = (data: Buffer | string): string => Buffer.from(data).toString('base64url');

async function body(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString();
}

/** `repository:NAME:ACTIONS` scopes (space-separated, or repeated) as the JWT's `access` claim. */
function access(scopes: readonly string[]): { type: string; name: string; actions: string[] }[] {
  return scopes
    .flatMap((s) => s.split(' '))
    .filter((s) => s !== '')
    .map((scope) => {
      const [type = '', ...rest] = scope.split(':');
      const actions = rest.pop() ?? '';
      return { type, name: rest.join(':'), actions: actions.split(',') };
    });
}

/** Starts the token server on 127.0.0.1. */
export async function startTokenServer(options: TokenServerOptions): Promise<TestTokenServer> {
  const key = await readFile(options.certificates.key, 'utf8');
  const certPem = await readFile(options.certificates.cert, 'utf8');
  const x5c = certPem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, '').replace(/\s+/g, '');
  const service = 'kiln-test-registry';
  const issuer = 'kiln-test-issuer';
  const requests: { method: string; grant: string; granted: boolean; url: string }[] = [];

  const sign = (scopes: readonly string[]): string => {
    const now = Math.floor(Date.now() / 1000);
    const header = base64url(JSON.stringify({ typ: 'JWT', alg: 'RS256', x5c: [x5c] }));
    const claims = base64url(
      JSON.stringify({ iss: issuer, sub: 'kiln-test', aud: service, exp: now + 300, nbf: now - 10, iat: now, jti: randomBytes(8).toString('hex'), access: access(scopes) }),
    );
    const signature = createSign('RSA-SHA256').update(`${header}.${claims}`).sign(key);
    return `${header}.${claims}.${base64url(signature)}`;
  };

  const handler: RequestListener = (req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://token');
      let granted = false;
      let grant = 'none';
      let scopes: string[] = [];
      if (req.method === 'POST') {
        const form = new URLSearchParams(await body(req));
        grant = form.get('grant_type') ?? 'none';
        granted = grant === 'refresh_token' && form.get('refresh_token') === options.identityToken && form.get('service') === service;
        scopes = form.getAll('scope');
      } else {
        grant = 'basic';
        const basic = options.basic === undefined ? undefined : `Basic ${Buffer.from(`${options.basic.user}:${options.basic.password}`).toString('base64')}`;
        granted = basic !== undefined && req.headers.authorization === basic;
        scopes = url.searchParams.getAll('scope');
      }
      requests.push({ method: req.method ?? '', grant, granted, url: req.url ?? '' });
      if (!granted) {
        res.writeHead(401, { 'content-type': 'application/json' }).end('{"errors":[{"code":"UNAUTHORIZED","message":"no"}]}');
        return;
      }
      const token = sign(scopes);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, access_token: token, expires_in: 300 }));
    })();
  };
  const server = options.https === true ? createHttpsServer({ cert: certPem, key }, handler) : createServer(handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    realm: `${options.https === true ? 'https' : 'http'}://127.0.0.1:${port}/token`,
    service,
    issuer,
    requests,
    async close() {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}
