/**
 * The build history's files: one folder per build under the root's
 * `history/`, holding `record.json` and `logs/`, one gzip file per step's
 * output. Records are written whole (a temp file renamed over the old
 * one), so a reader in another process sees the last record written, never
 * part of one; a folder whose record is not written yet is not listed.
 * Removal renames a folder out of the way first, so nothing half-removed
 * is ever listed either.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ERROR_CODES, KilnError } from '../errors.js';
import { makeDirectories } from '../store/layout.js';
import { type BuildRecord, type BuildSummary, buildIdTime, DEFAULT_RETENTION, expiredRecords, isBuildIdText, newBuildId, newestFirst, type RetentionPolicy } from './record.js';

const RECORD = 'record.json';
/** What retention reads of a record: its head, before its steps, is ~300 bytes with an error message, more with a long one. */
const HEAD_BYTES = 4096;
/** Where a folder being removed goes first (not a build id: ids have no dot). */
const TRASH_PREFIX = '.removing-';

/** The history of one root. */
export class HistoryStore {
  /** The `history/` folder of the root. */
  readonly dir: string;
  readonly retention: RetentionPolicy;

  constructor(dir: string, retention: RetentionPolicy = DEFAULT_RETENTION) {
    this.dir = dir;
    this.retention = retention;
  }

  /** Whether builds are recorded at all (`keepBuilds` 0: no). */
  get enabled(): boolean {
    return this.retention.keepBuilds > 0;
  }

  /** The folder of build `id`. */
  buildDir(id: string): string {
    return path.join(this.dir, id);
  }

  /** The file holding a vertex's log. */
  logPath(id: string, file: string): string {
    return path.join(this.dir, id, 'logs', file);
  }

  /** Makes the folder of a new build (with its `logs/`) and returns its id; `id` is used when given. */
  async create(id?: string): Promise<string> {
    await makeDirectories(this.dir);
    for (let attempt = 0; ; attempt++) {
      const candidate = id ?? newBuildId();
      if (!isBuildIdText(candidate)) throw new KilnError(ERROR_CODES.USAGE, `build id "${candidate}": expected lowercase letters, digits and dashes`);
      try {
        await mkdir(this.buildDir(candidate));
      } catch (err) {
        // Two builds started in the same second drew the same 16 bits: draw again.
        if ((err as NodeJS.ErrnoException).code === 'EEXIST' && id === undefined && attempt < 10) continue;
        throw err;
      }
      await mkdir(path.join(this.buildDir(candidate), 'logs'));
      return candidate;
    }
  }

  /**
   * Writes `record` whole: readers see the previous one or this one. Its
   * steps go last, so that retention reads only what comes before them (see
   * #summary).
   */
  async write(record: BuildRecord): Promise<void> {
    const tmp = path.join(this.buildDir(record.id), `.${RECORD}.${process.pid}.${randomBytes(4).toString('hex')}`);
    const { vertices, ...head } = record;
    await writeFile(tmp, `${JSON.stringify({ ...head, vertices })}\n`);
    await rename(tmp, path.join(this.buildDir(record.id), RECORD));
  }

  /** Every build with a record, newest first. */
  async list(): Promise<BuildRecord[]> {
    const records = await Promise.all(buildNames(await this.#listing()).map((n) => this.#read(n)));
    return records.filter((r): r is BuildRecord => r !== undefined).sort(newestFirst);
  }

  /** The build whose id is `id`, or the only one whose id starts with it; E_HISTORY_NOT_FOUND otherwise. */
  async get(id: string): Promise<BuildRecord> {
    const exact = isBuildIdText(id) ? await this.#read(id) : undefined;
    if (exact !== undefined) return exact;
    const matches = isBuildIdText(id) ? (await this.list()).filter((r) => r.id.startsWith(id)) : [];
    const [only] = matches;
    if (only !== undefined && matches.length === 1) return only;
    const why = matches.length > 1 ? `"${id}" is the start of ${matches.length} build ids; give more of it` : `no build "${id}" in the history of ${path.dirname(this.dir)}`;
    throw new KilnError(ERROR_CODES.HISTORY_NOT_FOUND, `${why} (kiln history ls lists them)`);
  }

  /** The build that started last; E_HISTORY_NOT_FOUND when there is none. */
  async latest(): Promise<BuildRecord> {
    const [newest] = await this.list();
    if (newest === undefined) throw new KilnError(ERROR_CODES.HISTORY_NOT_FOUND, `no build in the history of ${path.dirname(this.dir)} yet`);
    return newest;
  }

  /** The record of `id` as it is now, or undefined when it is gone (pruned) or not written yet. */
  async reread(id: string): Promise<BuildRecord | undefined> {
    return this.#read(id);
  }

  /**
   * Removes what retention says is past keeping (all of it with `all`),
   * never a build still running, nor `except`. Returns the ids removed.
   */
  async prune(options: { readonly all?: boolean; readonly except?: string; readonly now?: number } = {}): Promise<string[]> {
    const policy = options.all === true ? { keepBuilds: 0, keepDurationMs: 0 } : this.retention;
    const now = options.now ?? Date.now();
    const listing = await this.#listing();
    const names = buildNames(listing);
    const removed: string[] = [];
    if (options.all === true || !nothingExpires(names, policy, now)) {
      // `except` (the build that just ended) is kept, and counts as one of the builds kept.
      const expired = expiredRecords(await this.#summaries(names), policy, now, { ...(options.except === undefined ? {} : { keep: options.except }) });
      for (const record of expired) if (await this.#remove(record.id)) removed.push(record.id);
    }
    // What a process killed while removing left behind.
    await Promise.all(listing.filter((n) => n.startsWith(TRASH_PREFIX)).map((n) => rm(path.join(this.dir, n), { recursive: true, force: true })));
    return removed;
  }

  async #remove(id: string): Promise<boolean> {
    const trash = path.join(this.dir, `${TRASH_PREFIX}${id}-${randomBytes(4).toString('hex')}`);
    try {
      await rename(this.buildDir(id), trash);
    } catch (err) {
      // Another process removed it first.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
    await rm(trash, { recursive: true, force: true });
    return true;
  }

  /** Everything in the history folder (builds, temp and trash names); none when it does not exist yet. */
  async #listing(): Promise<string[]> {
    return readdir(this.dir).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    });
  }

  /** What retention reads of each of these builds that has a record (see #summary), newest first. */
  async #summaries(names: readonly string[]): Promise<BuildSummary[]> {
    const summaries = await Promise.all(names.map((n) => this.#summary(n)));
    return summaries.filter((r): r is BuildSummary => r !== undefined).sort(newestFirst);
  }

  /**
   * The record of `id` but its steps: parsed from the text before them
   * (write puts them last; `,"vertices":` can only be that key, as a quote
   * in a string is escaped), of which only the first HEAD_BYTES are read: a
   * record of hundreds of steps is hundreds of KB. A record written
   * otherwise (by an older kiln: its end came after its steps), or with a
   * longer head, is read and parsed whole.
   */
  async #summary(id: string): Promise<BuildSummary | undefined> {
    let head: string;
    try {
      const file = await open(path.join(this.buildDir(id), RECORD));
      try {
        const buffer = Buffer.alloc(HEAD_BYTES);
        const { bytesRead } = await file.read(buffer, 0, HEAD_BYTES, 0);
        head = buffer.toString('utf8', 0, bytesRead);
      } finally {
        await file.close();
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      throw err;
    }
    const steps = head.indexOf(',"vertices":');
    if (steps >= 0) {
      try {
        const summary = JSON.parse(`${head.slice(0, steps)}}`) as Partial<BuildSummary>;
        if (summary.version === 1 && summary.id === id && summary.status !== undefined && (summary.status === 'running' || summary.ended !== undefined)) return summary as BuildSummary;
      } catch {
        // Read whole below.
      }
    }
    return this.#read(id);
  }

  async #read(id: string): Promise<BuildRecord | undefined> {
    let text: string;
    try {
      text = await readFile(path.join(this.buildDir(id), RECORD), 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      throw err;
    }
    try {
      const record = JSON.parse(text) as BuildRecord;
      return record.version === 1 && record.id === id ? record : undefined;
    } catch {
      return undefined;
    }
  }
}

/** The builds' folders of a listing of the history folder (temp and trash names start with a dot). */
function buildNames(listing: readonly string[]): string[] {
  return listing.filter((n) => !n.startsWith('.'));
}

/**
 * Whether the folder names alone say that retention removes nothing: no
 * more builds than it keeps, each started (its id says when, to the
 * second) within the time it keeps them, so ended then or later. Every
 * record need then not be read (a fully cached build spent ~50 us on
 * each). Any other name, or an id in the future, and the records decide.
 */
function nothingExpires(names: readonly string[], policy: RetentionPolicy, now: number): boolean {
  if (names.length > policy.keepBuilds) return false;
  return names.every((name) => {
    const started = buildIdTime(name);
    return started !== undefined && started <= now && now - started <= policy.keepDurationMs;
  });
}
