/**
 * The lines of a frontend's source an op came from (a Dockerfile's RUN), as
 * shown above the error when that op fails: the file and line, then the
 * lines themselves with a little context, the op's own marked `>>>`.
 */
import type { SourceLocation } from '../llb/types.js';

/** Lines shown before the op's first line and after its last. */
const CONTEXT_BEFORE = 2;
const CONTEXT_AFTER = 1;

export function formatSourceLocation(location: SourceLocation): string {
  const first = Math.min(...location.lines.map((r) => r.start));
  const last = Math.max(...location.lines.map((r) => r.end));
  if (!Number.isFinite(first)) return `${location.file}\n`;
  const header = `${location.file}:${first === last ? first : `${first}-${last}`}\n`;
  if (location.text === undefined) return header;
  const lines = location.text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  const from = Math.max(1, first - CONTEXT_BEFORE);
  const to = Math.min(lines.length, last + CONTEXT_AFTER);
  if (from > to) return header;
  const width = String(to).length;
  const marked = (n: number): boolean => location.lines.some((r) => n >= r.start && n <= r.end);
  const rule = `${'-'.repeat(20)}\n`;
  let out = header + rule;
  for (let n = from; n <= to; n++) out += ` ${String(n).padStart(width)} | ${marked(n) ? '>>> ' : ''}${lines[n - 1] ?? ''}\n`;
  return out + rule;
}
