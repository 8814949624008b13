/**
 * A local source's snapshot: a full copy of the selected files (ingest.ts),
 * or, when the source was imported before and that import's snapshot is
 * still cached, that snapshot with only the changes written over it
 * (incremental.ts).
 */
import type { CacheManager, ImmutableRef } from '../../cache/types.js';
import type { CacheKey } from '../../digest.js';
import type { Mount } from '../../snapshot/types.js';
import { copyLocal } from './ingest.js';
import { type LocalImportRecord, MAX_IMPORT_DEPTH, updateLocal } from './incremental.js';
import type { LocalSourceLabel } from './selected-entries.js';
import type { LocalSelection } from './selection.js';

/** Options of {@link importLocal}. */
export interface ImportLocalOptions extends LocalSourceLabel {
  readonly cache: CacheManager;
  readonly dir: string;
  readonly selection: LocalSelection;
  /** The snapshot's description (the op's display name). */
  readonly description: string;
  readonly signal: AbortSignal;
  /** What the last import of the same directory and selection copied. */
  readonly previous?: LocalImportRecord | undefined;
  /** The entries now, as the walk that keyed the source saw them (checksumLocal's importLog). */
  readonly current?: (() => string) | undefined;
}

/** A local source's new snapshot, and what to remember of it. */
export interface ImportedLocal {
  readonly ref: ImmutableRef;
  /** The entry lines of the import (see incremental.ts). */
  readonly entries: string;
  /** Incremental imports stacked in it since the last full one (0: a full copy). */
  readonly depth: number;
  /** Whether it was made over the previous import. */
  readonly incremental: boolean;
}

/** Imports the selected files of `dir` as a new snapshot; incrementally when it can. */
export async function importLocal(options: ImportLocalOptions): Promise<ImportedLocal> {
  const { previous, current } = options;
  if (previous !== undefined && current !== undefined && previous.depth < MAX_IMPORT_DEPTH) {
    const made = await importOver(previous, current(), options);
    if (made !== undefined) return made;
  }
  return importWhole(options);
}

/** A full copy into a new, empty snapshot. */
async function importWhole(options: ImportLocalOptions): Promise<ImportedLocal> {
  const { cache, dir, selection, signal } = options;
  const mutable = await cache.newMutable(null, { description: options.description });
  try {
    let entries: string;
    {
      await using target = await mutable.mount();
      ({ log: entries } = await copyLocal(dir, selection, target.path, { signal, ...label(options) }));
    }
    return { ref: await mutable.commit(), entries, depth: 0, incremental: false };
  } catch (err) {
    await mutable.release();
    throw err;
  }
}

/** The previous import's snapshot with the changes written over it; undefined when that cannot be done. */
async function importOver(previous: LocalImportRecord, current: string, options: ImportLocalOptions): Promise<ImportedLocal | undefined> {
  const { cache, dir, signal } = options;
  const base = (await cache.lookup(previous.key as CacheKey))?.[0];
  if (base === undefined || base === null) return undefined;
  try {
    const mutable = await cache.newMutable(base, { description: options.description });
    try {
      // Written straight into the snapshot's own directory when it has one (no mount: two fewer
      // processes); through a mount when the changes need whiteouts.
      const direct = ownDirectory(await mutable.mounts());
      let result = direct === undefined ? undefined : await updateLocal(dir, direct.dir, previous.entries, current, { signal, layered: direct.layered, ...label(options) });
      if (result === undefined || result === 'removes') {
        await using target = await mutable.mount();
        result = await updateLocal(dir, target.path, previous.entries, current, { signal, ...label(options) });
      }
      if (result === null || result === 'removes') {
        await mutable.release();
        return undefined;
      }
      return { ref: await mutable.commit(), entries: current, depth: previous.depth + 1, incremental: true };
    } catch (err) {
      await mutable.release();
      throw err;
    }
  } finally {
    await base.release();
  }
}

/**
 * The directory a new snapshot's content can be written into without
 * mounting it: an overlay's upper layer (layered over the parent's), or a
 * writable directory that is the whole tree.
 */
function ownDirectory(mounts: readonly Mount[]): { readonly dir: string; readonly layered: boolean } | undefined {
  const [only, ...more] = mounts;
  if (only === undefined || more.length > 0) return undefined;
  if (only.type === 'overlay' && only.upper !== undefined) return { dir: only.upper.dir, layered: true };
  if (only.type === 'bind' && !only.readonly) return { dir: only.source, layered: false };
  return undefined;
}

function label(options: LocalSourceLabel): LocalSourceLabel {
  return options.name === undefined ? {} : { name: options.name };
}
