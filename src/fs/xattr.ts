/**
 * fs-xattr, loaded on first use. It is an ES module with a native addon:
 * loading it at start-up costs every process a dlopen and node's ES module
 * loader, and a cached build reads no extended attribute.
 */
import { createRequire } from 'node:module';

type Xattr = typeof import('fs-xattr');

let loaded: Xattr | undefined;

/** The fs-xattr module, for its synchronous calls (loaded by the first call; require() of an ES module, Node >= 20.19). */
export function xattrSync(): Xattr {
  loaded ??= createRequire(import.meta.url)('fs-xattr') as Xattr;
  return loaded;
}

/** The fs-xattr module (loaded by the first call). */
export function xattrModule(): Promise<Xattr> {
  return Promise.resolve().then(xattrSync);
}
