/**
 * `local://NAME`: a host directory the caller binds (`--local NAME=DIR`).
 * The cache key is the checksum of the selected files (with a metadata fast
 * path, so an unchanged directory is re-stat'ed, not re-read).
 */
import { stat } from 'node:fs/promises';
import { type CacheKey, digestOf } from '../../digest.js';
import { ERROR_CODES, KilnError, OpError } from '../../errors.js';
import { opDisplayName } from '../../llb/op-name.js';
import { identifierRest, identifierSite, type Source, type SourceBindings, type SourceOpOf, UnboundSourceError } from '../types.js';
import { checksumLocal, type LocalFileSignature } from './checksum.js';
import { parseLocalSelection } from './selection.js';

/** The directory bound to the op's name, or the error that says it is not bound. */
function boundDir(op: SourceOpOf, bindings: SourceBindings): string {
  const name = identifierRest(op);
  const dir = bindings.locals.get(name);
  if (dir === undefined) throw new UnboundSourceError({ op, code: ERROR_CODES.LOCAL_SOURCE, what: 'local', bindings: 'locals', binding: name });
  return dir;
}

export const localSource: Source = {
  scheme: 'local',
  check: (op, bindings) => void boundDir(op, bindings),
  resolve(op, ctx) {
    const name = identifierRest(op);
    const selection = parseLocalSelection(op.body.source.attrs);
    const site = identifierSite(op);
    let signature: (() => LocalFileSignature | undefined) | undefined;
    // This solve's key, which the import is saved under.
    let key: CacheKey | undefined;
    let importLog: (() => string) | undefined;
    return {
      fileSignature: () => signature?.(),
      async cacheKey(signal, progress) {
        const root = boundDir(op, ctx.bindings);
        const info = await stat(root).catch(() => undefined);
        if (info === undefined || !info.isDirectory()) throw new OpError(ERROR_CODES.LOCAL_SOURCE, `local source "${name}": ${root} is not a directory`, site);
        const started = new Date().toISOString();
        const sum = await checksumLocal(root, selection, {
          name,
          ...(ctx.localHashes === undefined ? {} : { hashCache: ctx.localHashes }),
          signal,
          onProgress: (current, total, bytes) => {
            // Every file listed (a total) and checked: the counters' last values.
            const completed = total !== undefined && current === total ? { completed: new Date().toISOString() } : {};
            progress.emit({ type: 'status', vertex: op.digest, id: 'hashing files', current, ...(total === undefined ? {} : { total }), started, ...completed });
            if (bytes !== undefined) progress.emit({ type: 'status', vertex: op.digest, id: 'hashing bytes', current: bytes.done, ...(bytes.total === undefined ? {} : { total: bytes.total }), unit: 'bytes', started, ...completed });
          },
        });
        signature = sum.fileSignature;
        importLog = sum.importLog;
        key = digestOf({ source: 'local', content: sum.digest }) as string as CacheKey;
        return key;
      },
      async snapshot(cache, signal) {
        const root = boundDir(op, ctx.bindings);
        const memory = ctx.localHashes;
        const importKey = `${digestOf(selection)} ${root}`;
        try {
          const { importLocal } = await import('./import.js');
          const made = await importLocal({
            cache,
            dir: root,
            selection,
            description: opDisplayName(op),
            signal,
            name,
            ...(memory?.getImport === undefined || importLog === undefined ? {} : { previous: memory.getImport(importKey), current: importLog }),
          });
          if (key !== undefined) memory?.putImport?.(importKey, { key, entries: made.entries, depth: made.depth });
          return made.ref;
        } catch (err) {
          if (err instanceof KilnError) throw err;
          throw new OpError(ERROR_CODES.LOCAL_SOURCE, `local source "${name}": ${err instanceof Error ? err.message : String(err)}`, { ...site, cause: err });
        }
      },
    };
  },
};
