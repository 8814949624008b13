/**
 * What an HTTP source remembers of a download, so the next build asks the
 * server whether the file changed (`If-None-Match` / `If-Modified-Since`)
 * instead of downloading it again: the response's ETag and Last-Modified,
 * and the digest of the body they stand for. Kept in a table of kiln's
 * store that this folder owns (`source/http/validators`, handed over by
 * the session), keyed by a hash of the request (URL and headers; never the
 * Authorization secret). Prune drops entries as it drops unused cache
 * records: all of them (no filter, or `--all`), or those older than
 * `--keep-duration`. Losing an entry only costs the next build one download.
 */
import { canonicalJson, type Digest, sha256 } from '../../digest.js';
import type { KvTable } from '../../store/store.js';
import { pruneUnused, type UnusedPruneOptions } from '../unused-records.js';

/** One remembered download. */
export interface HttpValidatorRecord {
  readonly etag?: string;
  readonly lastModified?: string;
  /** sha256 of the body the validators stand for. */
  readonly digest: Digest;
  readonly size: number;
  /** The name the response's Content-Disposition gave the file, when it gave one. */
  readonly suggestedFilename?: string;
  /** Where the body came from after redirects (credentials masked). */
  readonly finalUrl: string;
  readonly usedAt: number;
}

/** The remembered downloads: what HTTP sources read and write. */
export interface HttpValidatorStore {
  get(request: HttpRequestIdentity): HttpValidatorRecord | undefined;
  put(request: HttpRequestIdentity, record: Omit<HttpValidatorRecord, 'usedAt'>): void;
  remove(request: HttpRequestIdentity): void;
}

/** What identifies a request for its validators: the URL as written and the extra headers. */
export interface HttpRequestIdentity {
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
}

/** The validators over their table. */
export class StoredHttpValidators implements HttpValidatorStore {
  readonly #table: KvTable<HttpValidatorRecord>;

  constructor(table: KvTable<HttpValidatorRecord>) {
    this.#table = table;
  }

  get(request: HttpRequestIdentity): HttpValidatorRecord | undefined {
    return this.#table.get(storedKey(request));
  }

  put(request: HttpRequestIdentity, record: Omit<HttpValidatorRecord, 'usedAt'>): void {
    this.#table.put(storedKey(request), { ...record, usedAt: Date.now() });
  }

  remove(request: HttpRequestIdentity): void {
    this.#table.remove(storedKey(request));
  }

  /** Removes the entries prune selects; returns how many. */
  prune(options: UnusedPruneOptions, now: number): number {
    return pruneUnused(this.#table, options, now);
  }
}

/** A URL may hold credentials and be longer than lmdb allows a key to be: stored by hash. */
function storedKey(request: HttpRequestIdentity): string {
  return sha256(canonicalJson({ url: request.url, headers: request.headers }));
}
