/**
 * Recording one build while it runs: a progress sink that keeps each
 * vertex's state in the record, and the step logs, one gzip file per step,
 * written as the output comes (./step-log-file.ts: compressed off the main
 * thread, stored where the step prints faster than that). The record is
 * rewritten whole at most every RECORD_EVERY_MS while the build runs (so
 * `kiln history inspect` and `logs --follow` see it), and once more at the
 * end; then retention runs.
 */
import type { Writable } from 'node:stream';
import { asKilnError, ERROR_CODES } from '../errors.js';
import type { Logger } from '../log.js';
import { currentOwner } from '../owner.js';
import type { StepLogs } from '../progress/step-logs.js';
import type { ProgressEvent, ProgressSink } from '../progress/types.js';
import { type BuildRecord, type DebugShellSpec, mergedVertex, type VertexRecord } from './record.js';
import { StepLogFile } from './step-log-file.js';
import type { HistoryStore } from './store.js';

/** How often a running build's record is rewritten, at most. */
const RECORD_EVERY_MS = 250;

/** What a build's record starts with. */
export interface RecordOptions {
  /** The id to use (the caller may need it before the build ends); default a new one. */
  readonly id?: string;
  /** The definition file as given (`-` for stdin). */
  readonly definition?: string;
  readonly logger?: Logger;
}

/** One build being recorded. */
export class BuildRecorder implements ProgressSink, StepLogs {
  readonly id: string;
  readonly #store: HistoryStore;
  readonly #logger: Logger | undefined;
  /** The record but its vertices, which are kept apart to be updated in place (a 1,000-op graph sends thousands of events). */
  #record: BuildRecord;
  readonly #vertices: VertexRecord[] = [];
  /** Each vertex's index in #vertices, by digest. */
  readonly #index = new Map<string, number>();
  readonly #logs = new Map<string, StepLogFile>();
  #timer: NodeJS.Timeout | undefined;
  #writing: Promise<void> = Promise.resolve();
  #finished = false;

  private constructor(store: HistoryStore, record: BuildRecord, logger: Logger | undefined) {
    this.id = record.id;
    this.#store = store;
    this.#record = record;
    this.#logger = logger;
  }

  /** Starts the record of a build in `store` (its folder and a first `running` record). */
  static async start(store: HistoryStore, options: RecordOptions = {}): Promise<BuildRecorder> {
    const id = await store.create(options.id);
    const record: BuildRecord = { version: 1, id, owner: currentOwner(), definition: options.definition ?? '', started: new Date().toISOString(), status: 'running', vertices: [] };
    await store.write(record);
    return new BuildRecorder(store, record, options.logger);
  }

  emit(event: ProgressEvent): void {
    if (event.type !== 'vertex' || this.#finished) return;
    this.#update(event.digest, event.name, (before) => mergedVertex(before, event));
    this.#schedule();
  }

  /** A vertex's result is cached under `key` (see VertexRecord.key); `shell` says how to open it. */
  noteKey(digest: string, name: string, key: string, op: { readonly name: string; readonly shell: DebugShellSpec } | undefined): void {
    if (this.#finished) return;
    this.#update(digest, name, (v) => ({ ...v, key, ...(op === undefined ? {} : { op: op.name, shell: op.shell }) }));
    this.#schedule();
  }

  open(digest: string): Writable {
    const file = `${digest.replace(/^sha256:/, '').replace(/[^0-9a-z]/gi, '_')}.log.gz`;
    const log = new StepLogFile(this.#store.logPath(this.id, file), this.#logger);
    this.#logs.set(digest, log);
    this.#setLog(digest, file, 0);
    this.#schedule();
    return log.stream;
  }

  /** Ends the record: waits for every log to be on disk, writes the final record, then applies retention. */
  async finish(error?: unknown): Promise<void> {
    this.#finished = true;
    clearTimeout(this.#timer);
    for (const [digest, log] of this.#logs) {
      // A step ends its log when its process exits; one that never ran to that point is ended here.
      if (!log.stream.writableEnded) log.stream.end();
      await log.closed;
      this.#setLog(digest, log.file, log.bytes);
    }
    const ended = new Date();
    const e = error === undefined ? undefined : asKilnError(error);
    const status = e === undefined ? 'completed' : e.code === ERROR_CODES.CANCELLED ? 'cancelled' : 'failed';
    this.#record = {
      ...this.#record,
      ended: ended.toISOString(),
      status,
      durationMs: ended.getTime() - Date.parse(this.#record.started),
      ...(e === undefined ? {} : { error: { code: e.code, message: e.message, ...(e.op === undefined ? {} : { op: e.op }) } }),
    };
    // The build's own outcome is what its caller hears about: a history that cannot be written is only logged.
    try {
      await this.#writing;
      await this.#store.write(this.#current());
      await this.#store.prune({ except: this.id });
    } catch (err) {
      this.#logger?.warn({ err }, 'writing the build history failed');
    }
  }

  #setLog(digest: string, file: string, bytes: number): void {
    this.#update(digest, digest, (v) => ({ ...v, log: { file, bytes } }));
  }

  /** Replaces the vertex `digest` (first recorded as `name`, not cached) with what `change` makes of it. */
  #update(digest: string, name: string, change: (before: VertexRecord) => VertexRecord): void {
    const at = this.#index.get(digest);
    if (at === undefined) {
      this.#index.set(digest, this.#vertices.length);
      this.#vertices.push(change({ digest, name, cached: false }));
    } else {
      this.#vertices[at] = change(this.#vertices[at] as VertexRecord);
    }
  }

  /** The record as it stands. */
  #current(): BuildRecord {
    return { ...this.#record, vertices: [...this.#vertices] };
  }

  /** Rewrites the record soon (at most every RECORD_EVERY_MS), with the logs' sizes so far. */
  #schedule(): void {
    if (this.#timer !== undefined || this.#finished) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#finished) return;
      for (const [digest, log] of this.#logs) this.#setLog(digest, log.file, log.bytes);
      const record = this.#current();
      this.#writing = this.#writing
        .then(() => this.#store.write(record))
        .catch((err: unknown) => this.#logger?.warn({ err }, 'writing the build record failed'));
    }, RECORD_EVERY_MS);
    this.#timer.unref();
  }
}
