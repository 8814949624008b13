/**
 * What the build history keeps of one build: its record (when, what, how
 * it ended, each vertex with its times, cache hit and error) and which
 * logs it has. Pure data and rules here (merging progress into a record,
 * retention); the files are store.ts's.
 */
import { randomBytes } from 'node:crypto';
import { isOwnerAlive } from '../owner.js';
import type { VertexEvent } from '../progress/types.js';

/** How a build ended; `running` while its process lives. */
export type BuildStatus = 'running' | 'completed' | 'failed' | 'cancelled';

/** A build's status as a reader sees it: a `running` record whose process died is `interrupted`. */
export type ShownStatus = BuildStatus | 'interrupted';

/** One vertex (op) of a recorded build. */
export interface VertexRecord {
  /** The op's definition digest. */
  readonly digest: string;
  readonly name: string;
  /** ISO-8601 timestamps. */
  readonly started?: string;
  readonly completed?: string;
  readonly cached: boolean;
  readonly error?: string;
  /** Its full output: the file (in the build's `logs/` folder) and how many bytes it holds uncompressed. */
  readonly log?: { readonly file: string; readonly bytes: number };
  /**
   * The cache key of its result: `kiln prune` keeps that result while this
   * record is kept, and `kiln debug` opens a shell on it.
   */
  readonly key?: string;
  /** The op's name in the definition (the key under `ops`), which `kiln debug --vertex` also takes. */
  readonly op?: string;
  /** How `kiln debug` opens a shell on the result. */
  readonly shell?: DebugShellSpec;
}

/**
 * What a shell on a vertex's result takes from the op: an exec op's env,
 * working directory, user and network mode, and which of its outputs is the
 * root filesystem (its `/` mount's); for other ops, output 0 and defaults.
 */
export interface DebugShellSpec {
  readonly env: readonly string[];
  readonly cwd: string;
  readonly user: string;
  readonly network: 'sandbox' | 'host' | 'none';
  readonly rootOutput: number;
}

/** The error that ended a build. */
export interface RecordedError {
  readonly code: string;
  readonly message: string;
  readonly op?: string;
}

/** The record of one build (`record.json` in its folder). */
export interface BuildRecord {
  readonly version: 1;
  readonly id: string;
  /** The process writing it, `PID-STARTTIME` (src/owner.ts): a dead owner of a running record means the build was interrupted. */
  readonly owner: string;
  /** The definition file as given (`-` for stdin; empty for a solve with no file). */
  readonly definition: string;
  readonly started: string;
  readonly ended?: string;
  readonly status: BuildStatus;
  readonly durationMs?: number;
  readonly vertices: readonly VertexRecord[];
  readonly error?: RecordedError;
}

/** What retention reads of a record: all but its steps. */
export type BuildSummary = Pick<BuildRecord, 'version' | 'id' | 'owner' | 'started' | 'ended' | 'status'>;

/** How much history is kept: builds newer than `keepDurationMs`, at most `keepBuilds` of them. 0 builds: none is recorded. */
export interface RetentionPolicy {
  readonly keepDurationMs: number;
  readonly keepBuilds: number;
}

/** 48 hours and 50 builds. */
export const DEFAULT_RETENTION: RetentionPolicy = { keepDurationMs: 48 * 3_600_000, keepBuilds: 50 };

/** A new build id: its start time (UTC, so ids sort as builds started) and 16 random bits, e.g. `20261202-113501-3f9a`. */
export function newBuildId(now: Date = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  return `${stamp}-${randomBytes(2).toString('hex')}`;
}

/** When the build of id `id` started, to the second (ms since the epoch), if it is a {@link newBuildId} id; undefined otherwise. */
export function buildIdTime(id: string): number | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})(\d{2})-[0-9a-f]{4}$/.exec(id);
  if (m === null) return undefined;
  const [year, month, day, hour, minute, second] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  const time = Date.UTC(year, month - 1, day, hour, minute, second);
  // Date.UTC rolls an impossible date over (a 13th month): such a name is not an id.
  return newBuildId(new Date(time)).slice(0, 15) === id.slice(0, 15) ? time : undefined;
}

/** Whether `text` has the shape of a build id (or a prefix of one): nothing that could leave the history folder. */
export function isBuildIdText(text: string): boolean {
  return /^[0-9a-z-]{1,40}$/.test(text);
}

/** The status shown for `record`: `interrupted` when it says running but its process is gone. */
export function shownStatus(record: Pick<BuildRecord, 'status' | 'owner'>, alive: (owner: string) => boolean = isOwnerAlive): ShownStatus {
  return record.status === 'running' && !alive(record.owner) ? 'interrupted' : record.status;
}

/**
 * Vertices that ran and finished, came from the cache, or failed, counted
 * as the progress summary counts them: by each vertex's first completion
 * (one started and never completed, e.g. a source keyed for a step that
 * came from the cache, is in none).
 */
export function vertexCounts(record: BuildRecord): { readonly run: number; readonly cached: number; readonly failed: number } {
  let run = 0;
  let cached = 0;
  let failed = 0;
  for (const v of record.vertices) {
    if (v.completed === undefined) continue;
    if (v.error !== undefined) failed++;
    else if (v.cached) cached++;
    else run++;
  }
  return { run, cached, failed };
}

/** `vertices` with one vertex event merged in (events may carry only what changed). */
export function mergeVertex(vertices: readonly VertexRecord[], event: VertexEvent): VertexRecord[] {
  const at = vertices.findIndex((v) => v.digest === event.digest);
  const out = [...vertices];
  const merged = mergedVertex(at < 0 ? undefined : vertices[at], event);
  if (at < 0) out.push(merged);
  else out[at] = merged;
  return out;
}

/** One vertex's record with a vertex event merged in: `before` itself once it has completed. */
export function mergedVertex(before: VertexRecord | undefined, event: VertexEvent): VertexRecord {
  // A vertex's first completion is its outcome (a later "cancelled" does not undo an error).
  if (before?.completed !== undefined) return before;
  return {
    ...before,
    digest: event.digest,
    name: event.name,
    cached: event.cached,
    ...(event.started === undefined ? {} : { started: event.started }),
    ...(event.completed === undefined ? {} : { completed: event.completed }),
    ...(event.error === undefined ? {} : { error: event.error }),
  };
}

/** When a record last mattered: its end, else its start (ms since the epoch). */
function lastTime(record: BuildSummary): number {
  return Date.parse(record.ended ?? record.started);
}

/**
 * The records retention removes, of `records` sorted newest first: those
 * past the newest `keepBuilds`, and those that ended longer ago than
 * `keepDurationMs`. A build still running is never removed (and does not
 * count against the others); nor is `keep` (which counts as kept).
 */
export function expiredRecords<R extends BuildSummary>(
  records: readonly R[],
  policy: RetentionPolicy,
  now: number,
  options: { readonly keep?: string; readonly alive?: (owner: string) => boolean } = {},
): R[] {
  const expired: R[] = [];
  let kept = 0;
  for (const record of records) {
    if (record.id === options.keep) {
      kept++;
      continue;
    }
    if (shownStatus(record, options.alive) === 'running') continue;
    if (kept < policy.keepBuilds && now - lastTime(record) <= policy.keepDurationMs) kept++;
    else expired.push(record);
  }
  return expired;
}

/** Newest first: by start time, then by id. */
export function newestFirst(a: BuildSummary, b: BuildSummary): number {
  return Date.parse(b.started) - Date.parse(a.started) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
}
