/** `kiln du` and `kiln prune`. */
import { Session } from '../client/session.js';
import type { UsageRecord } from '../cache/types.js';
import { checkGlobalOptions, type GlobalOptions, sessionOptions } from './global-options.js';
import { formatBytes, parseBytes, parseDuration } from './options.js';

function openSession(options: GlobalOptions): Promise<Session> {
  return Session.open(sessionOptions(options));
}

/** Prints one line per cache record, then the total. */
export async function duCommand(options: GlobalOptions & { readonly verbose?: boolean }): Promise<void> {
  checkGlobalOptions(options);
  await using session = await openSession(options);
  const records = [...(await session.du())].sort((a, b) => b.size - a.size);
  const out: string[] = [];
  if (options.verbose === true) {
    for (const r of records) {
      out.push(`ID:\t\t${r.id}`, `Kind:\t\t${r.kind}`, `Description:\t${r.description}`, `Size:\t\t${formatBytes(r.size)}`, `In use:\t\t${r.inUse}`, `Shared:\t\t${r.shared}`, `Created at:\t${iso(r.createdAt)}`, `Last used:\t${iso(r.lastUsedAt)}`, '');
    }
  } else {
    out.push(row('ID', 'RECLAIMABLE', 'SIZE', 'LAST ACCESSED', 'DESCRIPTION'));
    for (const r of records) out.push(row(r.id, String(!r.inUse), formatBytes(r.size), iso(r.lastUsedAt), r.description));
  }
  // A kept image's size is that of its blobs, which are listed (and counted) on their own.
  const stored = records.filter((r) => r.kind !== 'image');
  const total = stored.reduce((n, r) => n + r.size, 0);
  const reclaimable = stored.filter((r) => !r.inUse).reduce((n, r) => n + r.size, 0);
  out.push(`Reclaimable:\t${formatBytes(reclaimable)}`, `Total:\t\t${formatBytes(total)}`);
  process.stdout.write(`${out.join('\n')}\n`);
}

/** Removes unused records and prints what went. */
export async function pruneCommand(
  options: GlobalOptions & { readonly all?: boolean; readonly keepStorage?: string; readonly keepDuration?: string },
): Promise<void> {
  checkGlobalOptions(options);
  const keepStorage = options.keepStorage === undefined ? undefined : parseBytes('--keep-storage', options.keepStorage);
  const keepDuration = options.keepDuration === undefined ? undefined : parseDuration('--keep-duration', options.keepDuration);
  await using session = await openSession(options);
  const report = await session.prune({
    ...(options.all === true ? { all: true } : {}),
    ...(keepStorage === undefined ? {} : { keepStorage }),
    ...(keepDuration === undefined ? {} : { keepDuration }),
  });
  const out = report.removed.map((r: UsageRecord) => row(r.id, formatBytes(r.size), r.description));
  out.push(`Total:\t${formatBytes(report.reclaimedBytes)} reclaimed (${report.removed.length} record${report.removed.length === 1 ? '' : 's'})`);
  out.push(`History:\t${report.history.length} build${report.history.length === 1 ? '' : 's'} removed`);
  process.stdout.write(`${out.join('\n')}\n`);
}

function row(...cells: string[]): string {
  const widths = [26, 12, 10, 25];
  return cells.map((c, i) => (i < cells.length - 1 ? c.padEnd(widths[i] ?? 12) : c)).join(' ');
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
