/**
 * Progress is data: a typed stream of events that the API exposes and the CLI
 * renders (plain, rawjson). Diagnostics logging (pino) never goes here.
 */

/** The state of one vertex (op) of the build, sent whenever it changes. */
export interface VertexEvent {
  readonly type: 'vertex';
  /** The op's definition digest (name-independent). */
  readonly digest: string;
  /** What the user sees: `llb.customname`, else a summary of the op. */
  readonly name: string;
  /** Digests of the vertices this one reads. */
  readonly inputs: readonly string[];
  /** ISO-8601 timestamps. */
  readonly started?: string;
  readonly completed?: string;
  readonly cached: boolean;
  /** Set when the vertex failed. */
  readonly error?: string;
  /** Why the vertex runs rather than comes from the cache; never on a cached vertex. */
  readonly reason?: RerunReason;
  /** The group the vertex belongs to in progress views (BuildKit's `Vertex.progressGroup`). */
  readonly progressGroup?: ProgressGroup;
}

/** A set of vertices that progress views show together under one name. */
export interface ProgressGroup {
  readonly id: string;
  readonly name: string;
}

/**
 * Why a vertex reruns, compared with the latest earlier build of the op of
 * the same name in this root. Values are as shown (masked, shortened).
 */
export type RerunReason =
  | { readonly kind: 'first-build' }
  /** `by`: the op's own `ignoreCache`, `--no-cache`, or `--no-cache-filter` (naming the op or one below it). */
  | { readonly kind: 'no-cache'; readonly by: 'ignoreCache' | '--no-cache' | '--no-cache-filter' }
  /** The op and its inputs are what they were, but that result is not stored (pruned, or kept by another snapshotter). */
  | { readonly kind: 'result-gone' }
  | RerunChanges;

/** What differs from the earlier build: any of fields, inputs, files; `other` when none of them says it. */
export interface RerunChanges {
  readonly kind: 'changed';
  /** Fields of the op's definition (`meta.args[2]`), the first few. */
  readonly fields: readonly FieldChange[];
  /** How many more fields changed than are listed. */
  readonly moreFields?: number;
  /** The names of the inputs whose result changed. */
  readonly inputs: readonly string[];
  /** A local source's files. */
  readonly files?: FileChanges;
  /**
   * Nothing listed explains the new key: a source's content moved (an
   * image tag, a branch, a download), or a value that is never shown changed.
   */
  readonly other?: 'source-content' | 'hidden-value';
}

/** One field of an op: absent `old` means added, absent `new` removed. */
export interface FieldChange {
  readonly path: string;
  readonly old?: string;
  readonly new?: string;
}

/** A local source's changed paths: the first few, and how many in all (`total` undefined: not listed, too many files). */
export interface FileChanges {
  readonly changes: readonly { readonly path: string; readonly change: 'added' | 'removed' | 'modified' }[];
  readonly total?: number;
}

/** Output of a running process (exec ops), as it comes. */
export interface LogEvent {
  readonly type: 'log';
  readonly vertex: string;
  /** 1 = stdout, 2 = stderr. */
  readonly stream: 1 | 2;
  readonly data: string;
  readonly timestamp: string;
}

/** A progress counter on long work inside a vertex (hashing, copying). */
export interface StatusEvent {
  readonly type: 'status';
  readonly vertex: string;
  /** What is being counted, e.g. `hashing files`. */
  readonly id: string;
  readonly current: number;
  readonly total?: number;
  /** `bytes` when current and total count bytes (renderers show them as sizes); absent for plain counts. */
  readonly unit?: 'bytes';
  readonly started?: string;
  readonly completed?: string;
}

/** One output of the build (`-o`), written after the solve: sent when it starts and when it ends. */
export interface ExportEvent {
  readonly type: 'export';
  /** The output's number in its build: outputs are numbered from 0 as they start. */
  readonly output: number;
  /** What the user sees: `oci out.tar`, `image example.com/app:v1`. */
  readonly name: string;
  /** ISO-8601 timestamps. */
  readonly started?: string;
  readonly completed?: string;
  /** Set when the output failed. */
  readonly error?: string;
  /** On a successful completion of an image output (oci, docker, image): the digest of the image manifest it wrote. */
  readonly digest?: string;
}

/** What exporters count. */
export const EXPORT_COUNTERS = ['bytes written', 'layers compressed', 'blobs pushed', 'bytes pushed'] as const;

/** The export counters that count bytes (renderers show them as sizes). */
export const BYTE_COUNTERS: ReadonlySet<ExportCounter> = new Set<ExportCounter>(['bytes written', 'bytes pushed']);
export type ExportCounter = (typeof EXPORT_COUNTERS)[number];

/** A counter of one output: bytes of an archive written, new layers compressed, blobs pushed. */
export interface ExportStatusEvent {
  readonly type: 'export-status';
  readonly output: number;
  readonly id: ExportCounter;
  readonly current: number;
  readonly total?: number;
  /** Set on the counter's last event (ISO-8601). */
  readonly completed?: string;
}

/**
 * Something the build went on without, in one line a person can act on
 * (an imported cache that could not be read: the build runs cold).
 */
export interface WarningEvent {
  readonly type: 'warning';
  readonly message: string;
  readonly timestamp: string;
}

export type ProgressEvent = VertexEvent | LogEvent | StatusEvent | ExportEvent | ExportStatusEvent | WarningEvent;

/** Where progress goes. Must not throw; must be cheap (it is called on hot paths). */
export interface ProgressSink {
  emit(event: ProgressEvent): void;
}

/** A sink that drops everything. */
export const NULL_PROGRESS: ProgressSink = { emit() {} };
