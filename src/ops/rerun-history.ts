/**
 * "Why did this rerun?": what each op's cache key was made of in the latest
 * build of an op of that name in this root, and the solver's explainer that
 * compares a vertex that runs with it.
 *
 * The history is a table of kiln's store that this folder owns (`ops/`,
 * handed over by the session), one record per op name: the op's canonical
 * form (with its inputs by position, URL credentials masked; secrets' values
 * are never part of it), its inputs' keys, and for a local source its file
 * list (./rerun-diff.ts). A build writes only the records whose key moved,
 * all in one transaction at its end; prune drops them as it drops the hash
 * index (all of them, or those older than `--keep-duration`).
 */
import type { ResultRef } from '../cache/types.js';
import type { CacheKey, Digest } from '../digest.js';
import { canonicalOp } from '../llb/canonical.js';
import type { Definition, Op } from '../llb/types.js';
import type { FieldChange, RerunReason } from '../progress/types.js';
import type { RerunExplainer, Vertex } from '../solver/types.js';
import type { LocalFileSignature } from '../source/local/checksum.js';
import type { KvTable } from '../store/store.js';
import { pruneUnused, type UnusedPruneOptions } from '../source/unused-records.js';
import { type NoCache, noCacheOps } from './graph.js';
import { fieldChanges, fileChanges, MAX_FIELDS, rememberedForm } from './rerun-diff.js';

/** What one build of an op remembered of its cache key. */
export interface RerunRecord {
  readonly key: string;
  /** The op's canonical form (masked, plain JSON), its inputs as `input N`. */
  readonly op: unknown;
  /** Its inputs' cache keys, in order. */
  readonly inputs: readonly string[];
  /** A local source's files (absent for other ops). */
  readonly files?: LocalFileSignature;
  readonly usedAt: number;
}

/** Where the history is kept. */
export interface RerunHistoryTables {
  /** One record per op name. */
  readonly records: KvTable<RerunRecord>;
  /**
   * Each record's key alone, by the same name: a cached build checks every
   * op's key, and decoding 1,000 whole records for that cost ~19 ms.
   */
  readonly keys: KvTable<RerunKey>;
  /** Runs writes as one commit. */
  readonly transaction: <T>(fn: () => T) => T;
}

/** The key a record holds, and when it was last written. */
export interface RerunKey {
  readonly key: string;
  readonly usedAt: number;
}

/** The history over its tables. */
export class RerunHistory {
  readonly #records: KvTable<RerunRecord>;
  readonly #keys: KvTable<RerunKey>;
  readonly #transaction: <T>(fn: () => T) => T;

  constructor(tables: RerunHistoryTables) {
    this.#records = tables.records;
    this.#keys = tables.keys;
    this.#transaction = tables.transaction;
  }

  /** The latest record of the op named `name`. */
  get(name: string): RerunRecord | undefined {
    return this.#records.get(name);
  }

  /**
   * The key of the latest record of `name`, and whether it came from the
   * key table (a record written before that table existed has no entry there).
   */
  keyOf(name: string): { readonly key: string; readonly indexed: boolean } | undefined {
    const indexed = this.#keys.get(name);
    if (indexed !== undefined) return { key: indexed.key, indexed: true };
    const record = this.#records.get(name);
    return record === undefined ? undefined : { key: record.key, indexed: false };
  }

  /** Replaces the records of these names, and writes the keys of `keysOnly` (records already there), in one transaction. */
  putAll(records: ReadonlyMap<string, RerunRecord>, keysOnly: ReadonlyMap<string, RerunKey> = new Map()): void {
    if (records.size === 0 && keysOnly.size === 0) return;
    this.#transaction(() => {
      for (const [name, record] of records) {
        this.#records.put(name, record);
        this.#keys.put(name, { key: record.key, usedAt: record.usedAt });
      }
      for (const [name, key] of keysOnly) this.#keys.put(name, key);
    });
  }

  /** Records and the bytes they hold (roughly), for tests and `du`. */
  usage(): { readonly entries: number; readonly size: number } {
    let entries = 0;
    let size = 0;
    for (const [name, record] of this.#records.entries()) {
      entries++;
      size += name.length + JSON.stringify(record).length;
    }
    return { entries, size };
  }

  /** Removes the records prune selects (call inside a write transaction); returns how many. */
  prune(options: UnusedPruneOptions, now: number): number {
    const removed = pruneUnused(this.#records, options, now);
    // A key goes with its record (a key left alone would say an op was seen that has no record).
    for (const [name] of [...this.#keys.entries()]) if (this.#records.get(name) === undefined) this.#keys.remove(name);
    return removed;
  }
}

/** What the explainer of one solve needs. */
export interface RerunExplainerOptions {
  readonly definition: Definition;
  readonly history: RerunHistory;
  readonly noCache?: NoCache;
  /** A local source op's file list as its key was computed in this solve. */
  readonly files?: (op: Op) => LocalFileSignature | undefined;
}

/** The solver's explainer over the history; `flush()` writes what the solve remembered. */
export function rerunExplainer(options: RerunExplainerOptions): RerunExplainer<ResultRef> & { flush(): void } {
  const { definition, history } = options;
  const rerun = noCacheOps(definition, options.noCache ?? false);
  // The graph makes one vertex of ops with one digest; the first op gives it its settings, as here.
  const byDigest = new Map<Digest, Op[]>();
  for (const op of definition.ops.values()) {
    const ops = byDigest.get(op.digest);
    if (ops === undefined) byDigest.set(op.digest, [op]);
    else ops.push(op);
  }
  // What remember() noted, made into records by flush(): an op's remembered
  // form costs a canonical JSON of it, which has no business between a
  // vertex's end and its dependents' start (a wide build's 16 stages end at
  // once, and their merge waited for every one).
  const pending = new Map<string, { readonly key: CacheKey; readonly record: () => RerunRecord }>();
  /** Records already right whose key is not in the key table yet (written by an older kiln). */
  const unindexed = new Map<string, RerunKey>();
  const current = (op: Op, key: CacheKey, inputKeys: readonly CacheKey[], usedAt = Date.now()): RerunRecord => {
    const files = op.body.kind === 'source' ? options.files?.(op) : undefined;
    return {
      key,
      op: rememberedForm(canonicalOp(op, op.inputs.map((_, i) => `input ${i}`))),
      inputs: inputKeys,
      ...(files === undefined ? {} : { files }),
      usedAt,
    };
  };
  return {
    reason(vertex: Vertex<ResultRef>, key, inputKeys) {
      try {
        const op = byDigest.get(vertex.digest)?.[0];
        if (op === undefined) return undefined;
        if (op.metadata.ignoreCache) return { kind: 'no-cache', by: 'ignoreCache' };
        if (rerun.has(op.name)) return { kind: 'no-cache', by: options.noCache === true ? '--no-cache' : '--no-cache-filter' };
        const before = history.get(op.name);
        if (before === undefined) return { kind: 'first-build' };
        if (before.key === key) return { kind: 'result-gone' };
        return changes(op, before, current(op, key, inputKeys));
      } catch {
        // An explanation is a courtesy: a record it cannot read never fails the build.
        return undefined;
      }
    },
    remember(vertex, key, inputKeys) {
      for (const op of byDigest.get(vertex.digest) ?? []) {
        const waiting = pending.get(op.name);
        // A key noted in this build is as good as indexed: flush writes it with its record.
        const before = waiting === undefined ? history.keyOf(op.name) : { key: waiting.key, indexed: true };
        const usedAt = Date.now();
        if (before?.key !== key) pending.set(op.name, { key, record: () => current(op, key, inputKeys, usedAt) });
        else if (!before.indexed) unindexed.set(op.name, { key, usedAt });
      }
    },
    flush() {
      history.putAll(new Map([...pending].map(([name, noted]) => [name, noted.record()])), unindexed);
      pending.clear();
      unindexed.clear();
    },
  };
}

/** What differs between the remembered build of `op` and this one. */
function changes(op: Op, before: RerunRecord, now: RerunRecord): RerunReason {
  const fields = opFieldChanges(op, before.op, now.op);
  const inputs = op.inputs.flatMap((input, i) => (before.inputs[i] !== undefined && before.inputs[i] !== now.inputs[i] ? [input.op] : []));
  const files = now.files === undefined || before.files === undefined ? undefined : fileChanges(before.files, now.files);
  const listed = fields.length > 0 || inputs.length > 0 || (files !== undefined && (files.changes.length > 0 || files.total === undefined));
  return {
    kind: 'changed',
    fields: fields.slice(0, MAX_FIELDS),
    ...(fields.length > MAX_FIELDS ? { moreFields: fields.length - MAX_FIELDS } : {}),
    inputs: [...new Set(inputs)],
    ...(files === undefined || (files.changes.length === 0 && files.total !== undefined) ? {} : { files }),
    ...(listed ? {} : { other: op.body.kind === 'source' ? 'source-content' : 'hidden-value' }),
  };
}

/**
 * The changed fields, with paths inside the op's body as the file writes
 * them (`meta.args[2]` of an exec, `actions[0].mkfile.path` of a file op);
 * platform, constraints and inputs keep their own names.
 */
function opFieldChanges(op: Op, before: unknown, now: unknown): FieldChange[] {
  const kind = op.body.kind;
  return fieldChanges(before, now).map((change) => {
    const inBody = change.path.startsWith(`${kind}.`) ? change.path.slice(kind.length + 1) : change.path.startsWith(`${kind}[`) ? change.path.slice(kind.length) : change.path;
    return { ...change, path: inBody };
  });
}
