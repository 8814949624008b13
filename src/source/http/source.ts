/**
 * `https://...` and `http://...`: one file fetched over HTTP(S), as a
 * filesystem holding that file (named by `http.filename`, else the
 * response's Content-Disposition, else the URL's last path segment, else
 * `index`; mode `http.perm`, default 0600; owner `http.uid`/`http.gid`;
 * mtime the response's Last-Modified, else 0 as in BuildKit, so the result
 * is the same on every machine).
 *
 * The cache key is the content, with the file's name, mode and owner:
 * - with `http.checksum`, the checksum itself, so a cached result needs no
 *   request at all (a download that does not match fails with both digests);
 * - without it, the body's sha256, found by downloading it while keying. The
 *   response's ETag and Last-Modified are remembered (./validators.ts), so
 *   the next build sends a conditional request: an unchanged file answers
 *   304, nothing is downloaded and the key is the remembered digest.
 *
 * A download made while keying waits in kiln's scratch dir for the snapshot
 * (which moves it in) or for `release` (which removes it when the result
 * was cached). The Authorization secret (`http.authheadersecret`) is read
 * from the build's secrets when the request is made; it is in no key,
 * record, log or progress event.
 */
import { copyFile, lchown, mkdir, rename, rm, chmod, utimes } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { MutableRef } from '../../cache/types.js';
import { type CacheKey, type Digest, digestOf } from '../../digest.js';
import { ERROR_CODES, KilnError, MissingGrantError, OpError } from '../../errors.js';
import { fieldPath } from '../../llb/check.js';
import { maskUrlCredentials, opDisplayName } from '../../llb/op-name.js';
import type { ProgressSink } from '../../progress/types.js';
import { identifierSite, type Source, type SourceContext, type SourceInstance, type SourceOpOf } from '../types.js';
import type { Downloaded } from './download.js';
import type { ErrorSite } from './status-error.js';
import { type HttpSourceOptions, parseHttpSource } from './options.js';
import type { HttpRequestIdentity } from './validators.js';

/** How often a download's byte counter is sent to progress. */
const PROGRESS_INTERVAL_MS = 100;

/** The `http` and `https` sources: one Source per scheme, the same code. */
function httpSource(scheme: 'http' | 'https'): Source {
  return {
    scheme,
    // The loader checked the URL and every attr; a secret is checked with the context (resolve).
    check: () => undefined,
    resolve: (op, ctx) => httpInstance(op, ctx),
  };
}

export const httpsSource: Source = httpSource('https');
export const plainHttpSource: Source = httpSource('http');

/** The value of the Authorization header, or the error that says which secret is missing. */
function authorizationOf(op: SourceOpOf, options: HttpSourceOptions, secrets: SourceContext['secrets']): string | undefined {
  const id = options.authHeaderSecret;
  if (id === undefined) return undefined;
  const value = secrets.get(id);
  if (value === undefined) {
    throw new MissingGrantError(ERROR_CODES.SECRET, `op "${op.name}" needs secret "${id}" for http.authheadersecret, but it was not given`, {
      op: op.name,
      field: fieldPath(`ops.${op.name}.source.attrs`, 'http.authheadersecret'),
      grant: { kind: 'secret', id },
    });
  }
  // A secret file usually ends with a newline, which no header value may hold.
  return Buffer.from(value).toString('utf8').replace(/\r?\n$/, '');
}

function httpInstance(op: SourceOpOf, ctx: SourceContext): SourceInstance {
  const options = parseHttpSource(op.body.source.identifier, op.body.source.attrs);
  const authorization = authorizationOf(op, options, ctx.secrets);
  const site = identifierSite(op);
  const shown = maskUrlCredentials(options.url.href);
  const identity: HttpRequestIdentity = { url: options.url.href, headers: options.headers };
  const scratch = ctx.scratchDir ?? os.tmpdir();
  const keyOf = (content: Digest, filename: string): CacheKey =>
    digestOf({ source: 'http', content, filename, perm: options.perm, uid: options.uid, gid: options.gid }) as string as CacheKey;
  /** The file's name: http.filename, else what the response suggested, else the URL's. */
  const nameOf = (suggested: string | undefined): string => (options.explicitFilename ? options.filename : (suggested ?? options.filename));
  /** The digest the key stands for, once keyed (the checksum, the remembered or the downloaded digest). */
  let keyedDigest: Digest | undefined;
  /** A download made while keying, until the snapshot takes it or release removes it. */
  let pending: Downloaded | undefined;

  const fetchBody = async (signal: AbortSignal, progress: ProgressSink, conditional: boolean) => {
    const record = conditional ? ctx.httpValidators?.get(identity) : undefined;
    await mkdir(scratch, { recursive: true });
    // node:http, node:https and tls load only for builds that download.
    const { download } = await import('./download.js');
    return download({
      url: options.url,
      headers: options.headers,
      ...(authorization === undefined ? {} : { authorization }),
      ...(record === undefined ? {} : { conditional: record }),
      dir: scratch,
      signal,
      onProgress: progressReporter(op.digest, progress),
      site,
    }).then((result) => ({ result, record }));
  };

  return {
    async cacheKey(signal, progress) {
      if (options.checksum !== undefined) {
        keyedDigest = options.checksum;
        // No request: the name is the op's or the URL's (a download may still name the file by its Content-Disposition).
        return keyOf(options.checksum, options.filename);
      }
      const { result, record } = await fetchBody(signal, progress, true);
      if (result.status === 'not-modified' && record !== undefined) {
        ctx.httpValidators?.put(identity, { ...record, finalUrl: maskUrlCredentials(result.finalUrl.href) });
        keyedDigest = record.digest;
        return keyOf(record.digest, nameOf(record.suggestedFilename));
      }
      if (result.status !== 'downloaded') throw new KilnError(ERROR_CODES.INTERNAL, `GET ${shown}: 304 to an unconditional request`);
      await releasePending();
      pending = result;
      keyedDigest = result.digest;
      remember(result);
      return keyOf(result.digest, nameOf(result.suggestedFilename));
    },

    async snapshot(cache, signal, progress) {
      let body = pending;
      pending = undefined;
      if (body === undefined) {
        const { result } = await fetchBody(signal, progress, false);
        if (result.status !== 'downloaded') throw new KilnError(ERROR_CODES.INTERNAL, `GET ${shown}: 304 to an unconditional request`);
        body = result;
      }
      try {
        checkDigest(body, site);
        const mutable = await cache.newMutable(null, { description: opDisplayName(op) });
        try {
          await inWritableDir(mutable, (dir) => place(body, path.join(dir, nameOf(body.suggestedFilename)), options));
          return await mutable.commit();
        } catch (err) {
          await mutable.release();
          throw err;
        }
      } catch (err) {
        if (err instanceof KilnError) throw err;
        throw new OpError(ERROR_CODES.HTTP_SOURCE, `${shown}: ${err instanceof Error ? err.message : String(err)}`, { ...site, cause: err });
      } finally {
        await rm(body.file, { force: true });
      }
    },

    release: () => releasePending(),
  };

  async function releasePending(): Promise<void> {
    const file = pending?.file;
    pending = undefined;
    if (file !== undefined) await rm(file, { force: true });
  }

  /** Remembers the validators of a download (or forgets stale ones when the server sent none). */
  function remember(result: Downloaded): void {
    if (ctx.httpValidators === undefined) return;
    if (result.validators.etag === undefined && result.validators.lastModified === undefined) {
      ctx.httpValidators.remove(identity);
      return;
    }
    ctx.httpValidators.put(identity, {
      ...result.validators,
      digest: result.digest,
      size: result.size,
      ...(result.suggestedFilename === undefined ? {} : { suggestedFilename: result.suggestedFilename }),
      finalUrl: maskUrlCredentials(result.finalUrl.href),
    });
  }

  /** Refuses a body that is not what the key promised: the checksum, or the body the server said was unchanged. */
  function checkDigest(body: Downloaded, where: ErrorSite): void {
    if (keyedDigest === undefined || body.digest === keyedDigest) return;
    if (options.checksum !== undefined) {
      throw new OpError(ERROR_CODES.HTTP_SOURCE, `${shown}: checksum mismatch: http.checksum is ${options.checksum}, the content is ${body.digest}`, {
        op: where.op,
        field: fieldPath(`ops.${where.op}.source.attrs`, 'http.checksum'),
      });
    }
    // Keyed on a 304 whose result was gone, and the file changed since: the key is stale.
    ctx.httpValidators?.remove(identity);
    throw new OpError(ERROR_CODES.HTTP_SOURCE, `${shown} changed while this build ran (${keyedDigest} when keyed, ${body.digest} now); build again`, where);
  }
}

/**
 * Runs `fn` on the mutable snapshot's directory. A snapshot that is one
 * writable directory (no parent: the snapshotter's own bind) is written in
 * place, so the download is renamed in without a copy; otherwise it is mounted.
 */
async function inWritableDir(mutable: MutableRef, fn: (dir: string) => Promise<void>): Promise<void> {
  const mounts = await mutable.mounts();
  const only = mounts.length === 1 ? mounts[0] : undefined;
  if (only?.type === 'bind' && !only.readonly) return fn(only.source);
  await using target = await mutable.mount();
  await fn(target.path);
}

/** Moves (or, across filesystems, copies) the body to `dest` with the op's mode, owner and the server's mtime (else 0). */
async function place(body: Downloaded, dest: string, options: HttpSourceOptions): Promise<void> {
  try {
    await rename(body.file, dest);
  } catch (err) {
    // A mounted snapshot is another mount than kiln's scratch dir, even on one filesystem.
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    await copyFile(body.file, dest);
  }
  if (options.uid !== undefined || options.gid !== undefined) await lchown(dest, options.uid ?? -1, options.gid ?? -1);
  await chmod(dest, options.perm);
  const modified = body.validators.lastModified === undefined ? Number.NaN : Date.parse(body.validators.lastModified);
  const seconds = Number.isNaN(modified) ? 0 : modified / 1000;
  await utimes(dest, seconds, seconds);
}

/** A throttled byte counter for one download, ending with a `completed` event. */
function progressReporter(vertex: string, progress: ProgressSink): (current: number, total: number | undefined) => void {
  const started = new Date().toISOString();
  let last = 0;
  return (current, total) => {
    const now = Date.now();
    const done = total !== undefined && current >= total;
    if (!done && now - last < PROGRESS_INTERVAL_MS) return;
    last = now;
    progress.emit({ type: 'status', vertex, id: 'downloading', current, ...(total === undefined ? {} : { total }), started, ...(done ? { completed: new Date(now).toISOString() } : {}) });
  };
}
