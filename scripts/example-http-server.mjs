#!/usr/bin/env node
// Serves the files of a directory over plain HTTP on 127.0.0.1, for the
// http-source example (llb-examples/http-source.json) and bench/sources-http.
//
//   node scripts/example-http-server.mjs [DIR] [PORT]
//
// DIR defaults to llb-examples/http-files, PORT to 8787 (0 picks a free one).
// The first line printed is the base URL. Each file is streamed with its
// length, an ETag (from its size and mtime) and its Last-Modified, and a
// conditional request for an unchanged file gets 304, as real servers do.
// Only 127.0.0.1 is bound: nothing outside this machine can reach it.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const root = path.resolve(process.argv[2] ?? path.join(repo, 'llb-examples', 'http-files'));
const port = Number(process.argv[3] ?? 8787);

const server = createServer(async (req, res) => {
  const name = decodeURIComponent(new URL(req.url ?? '/', 'http://127.0.0.1').pathname);
  const file = path.join(root, path.normalize(name));
  if (!file.startsWith(root + path.sep) || req.method !== 'GET') {
    res.writeHead(req.method === 'GET' ? 404 : 405).end();
    return;
  }
  const info = await stat(file).catch(() => undefined);
  if (info === undefined || !info.isFile()) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    return;
  }
  const etag = `"${info.size.toString(16)}-${Math.floor(info.mtimeMs).toString(16)}"`;
  const lastModified = info.mtime.toUTCString();
  const unchanged = req.headers['if-none-match'] !== undefined ? req.headers['if-none-match'] === etag : req.headers['if-modified-since'] === lastModified;
  if (unchanged) {
    res.writeHead(304, { etag, 'last-modified': lastModified }).end();
    return;
  }
  res.writeHead(200, { 'content-length': info.size, etag, 'last-modified': lastModified, 'content-type': 'application/octet-stream' });
  createReadStream(file, { highWaterMark: 1024 * 1024 }).pipe(res);
});

server.listen(port, '127.0.0.1', () => {
  const address = server.address();
  console.log(`http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : port}`);
});
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => server.close(() => process.exit(0)));
