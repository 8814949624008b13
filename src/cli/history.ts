/** `kiln history ls|inspect|logs`: the builds a root remembers, and their full logs. */
import { defaultRoot } from '../client/session.js';
import { type BuildRecord, shownStatus, vertexCounts, type VertexRecord } from '../history/record.js';
import { HistoryStore } from '../history/store.js';
import { writeLogs } from '../history/logs.js';
import { formatBytes } from '../bytes.js';
import { formatSeconds } from '../progress/format.js';
import { rootLayout } from '../store/layout.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import { checkGlobalOptions, type GlobalOptions } from './global-options.js';

/** `--format` of ls and inspect. */
export const HISTORY_FORMATS = ['table', 'json'] as const;
type HistoryFormat = (typeof HISTORY_FORMATS)[number];

interface HistoryOptions extends GlobalOptions {
  readonly format?: HistoryFormat;
}

/**
 * A failed build that has a history record: the CLI prints the error, then
 * `command`, which shows the build's whole log, as its last line.
 */
export class RecordedFailure extends Error {
  readonly error: unknown;
  readonly command: string;
  constructor(error: unknown, command: string) {
    super(error instanceof Error ? error.message : String(error));
    this.name = 'RecordedFailure';
    this.error = error;
    this.command = command;
  }
}

/** The command that prints build `id`'s logs, with `--root` when one was given (quoted for a shell when it needs it). */
export function logsCommandLine(id: string, root: string | undefined): string {
  const quoted = root === undefined ? undefined : /^[\w@%+=:,./-]+$/.test(root) ? root : `'${root.replaceAll("'", "'\\''")}'`;
  return `kiln history logs ${id}${quoted === undefined ? '' : ` --root ${quoted}`}`;
}

function openHistory(options: GlobalOptions): HistoryStore {
  checkGlobalOptions(options);
  return new HistoryStore(rootLayout(options.root ?? defaultRoot()).history);
}

/** `kiln history ls`: one line per build, newest first. */
export async function historyLsCommand(options: HistoryOptions): Promise<void> {
  const records = await openHistory(options).list();
  if (options.format === 'json') {
    process.stdout.write(`${JSON.stringify(records.map(summary))}\n`);
    return;
  }
  const rows = [['ID', 'STARTED', 'DEFINITION', 'STATUS', 'DURATION', 'RUN', 'CACHED']];
  for (const r of records) {
    const s = summary(r);
    rows.push([r.id, when(r.started), r.definition || '(api)', s.status, s.durationMs === undefined ? '-' : `${formatSeconds(s.durationMs)}s`, String(s.run), String(s.cached)]);
  }
  process.stdout.write(table(rows));
}

/** `kiln history inspect ID`: the build, each vertex with its times and cache hit, and the error. */
export async function historyInspectCommand(id: string, options: HistoryOptions): Promise<void> {
  const record = await openHistory(options).get(id);
  const s = summary(record);
  if (options.format === 'json') {
    process.stdout.write(`${JSON.stringify({ ...record, ...s }, null, 2)}\n`);
    return;
  }
  const out = [
    `ID:          ${record.id}`,
    `Definition:  ${record.definition || '(api)'}`,
    `Status:      ${s.status}`,
    `Started:     ${when(record.started)}`,
    ...(record.ended === undefined ? [] : [`Ended:       ${when(record.ended)}`]),
    ...(s.durationMs === undefined ? [] : [`Duration:    ${formatSeconds(s.durationMs)}s`]),
    `Vertices:    ${s.run} run, ${s.cached} cached${s.failed === 0 ? '' : `, ${s.failed} failed`}`,
    ...(record.error === undefined ? [] : [`Error:       ${record.error.op !== undefined && !record.error.message.includes(`"${record.error.op}"`) ? `op "${record.error.op}": ` : ''}${record.error.message}`]),
    '',
  ].join('\n');
  const rows = [['VERTEX', 'STATUS', 'STARTED', 'DURATION', 'LOG', 'DIGEST']];
  for (const v of record.vertices) {
    rows.push([v.name, vertexStatus(v, s.status !== 'running'), v.started === undefined ? '-' : when(v.started), vertexDuration(v), v.log === undefined ? '-' : formatBytes(v.log.bytes), v.digest.replace(/^sha256:/, '').slice(0, 12)]);
  }
  // The error that ended the build is said above; other steps' errors (a parallel step cancelled) here.
  const errors = record.vertices.filter((v) => v.error !== undefined && v.error !== record.error?.message).map((v) => `  ${v.name}: ${v.error ?? ''}`);
  process.stdout.write(`${out}\n${table(rows)}${errors.length === 0 ? '' : `\nErrors:\n${errors.join('\n')}\n`}`);
}

/** `kiln history logs [ID] [--vertex NAME] [--follow]`: the full output of a build's steps (the latest build without ID). */
export async function historyLogsCommand(id: string | undefined, options: HistoryOptions & { readonly vertex?: string; readonly follow?: boolean }): Promise<void> {
  const history = openHistory(options);
  const target = id ?? (await history.latest()).id;
  const abort = new AbortController();
  const stop = (): void => abort.abort(new KilnError(ERROR_CODES.CANCELLED, 'stopped following'));
  process.once('SIGINT', stop);
  // A reader that stops reading (`| head`) ends the command, as it ends cat's.
  process.stdout.once('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') process.stderr.write(`error: writing the logs: ${err.message}\n`);
    process.exit(err.code === 'EPIPE' ? 0 : 1);
  });
  try {
    await writeLogs(history, target, process.stdout, {
      ...(options.vertex === undefined ? {} : { vertex: options.vertex }),
      ...(options.follow === true ? { follow: true } : {}),
      signal: abort.signal,
    });
  } catch (err) {
    // Ctrl-C ends a follow: what was printed is what there was.
    if (!abort.signal.aborted) throw err;
  } finally {
    process.off('SIGINT', stop);
  }
}

function summary(record: BuildRecord): { id: string; started: string; definition: string; status: string; durationMs?: number; run: number; cached: number; failed: number } {
  const { run, cached, failed } = vertexCounts(record);
  const status = shownStatus(record);
  const durationMs = record.durationMs ?? (status === 'running' ? Date.now() - Date.parse(record.started) : undefined);
  return { id: record.id, started: record.started, definition: record.definition, status, ...(durationMs === undefined ? {} : { durationMs }), run, cached, failed };
}

/** As the progress view names a vertex's state; one the build left unfinished is `UNFINISHED`. */
function vertexStatus(v: VertexRecord, buildEnded: boolean): string {
  if (v.error !== undefined) return 'ERROR';
  if (v.cached) return 'CACHED';
  if (v.completed !== undefined) return 'DONE';
  if (buildEnded) return 'UNFINISHED';
  return v.started === undefined ? 'WAITING' : 'RUNNING';
}

function vertexDuration(v: VertexRecord): string {
  if (v.started === undefined || v.completed === undefined || v.cached) return '-';
  return `${formatSeconds(Date.parse(v.completed) - Date.parse(v.started))}s`;
}

/** An ISO time to the second, in UTC: `2026-12-02 11:35:01Z`. */
function when(iso: string): string {
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)}Z`;
}

/** Columns padded to their widest cell, two spaces apart. */
function table(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  ')).join('\n') + '\n';
}
