/**
 * Content digests and canonical JSON. Cache keys are SHA-256 over canonical
 * JSON (object keys sorted, no whitespace) so that the same op always hashes
 * the same, whatever order its file wrote the keys in.
 */
import { createHash } from 'node:crypto';

/** A content digest, `sha256:<64 hex>`. Branded so it cannot be mixed with other strings. */
export type Digest = string & { readonly __brand: 'Digest' };

/** The key a result is cached under (a digest of the op and its inputs' keys). */
export type CacheKey = string & { readonly __brand: 'CacheKey' };

const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;

/** True when `s` is a well-formed sha256 digest. */
export function isDigest(s: string): s is Digest {
  return DIGEST_RE.test(s);
}

/** SHA-256 of bytes or a UTF-8 string, as a Digest. */
export function sha256(data: string | Uint8Array): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}` as Digest;
}

/**
 * Canonical JSON: object keys sorted by code unit, no whitespace, `undefined`
 * members dropped. Arrays keep their order (order is meaningful in LLB).
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    if (typeof value === 'number' && !Number.isFinite(value)) throw new TypeError('canonicalJson: non-finite number');
    if (typeof value === 'bigint') return value.toString();
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) {
    return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  }
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).filter((k) => obj[k] !== undefined).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
}

/** The digest of a value's canonical JSON. */
export function digestOf(value: unknown): Digest {
  return sha256(canonicalJson(value));
}
