/** A rerun reason as one line of text, as plain, tty and `kiln build --explain` show it. */
import { assertNever } from '../errors.js';
import type { RerunChanges, RerunReason } from './types.js';

/** `meta.args[2] changed "make" → "make -j4"`, `input "base" changed`, `no earlier build of this op`. */
export function formatReason(reason: RerunReason): string {
  switch (reason.kind) {
    case 'first-build':
      return 'no earlier build of this op';
    case 'no-cache':
      return reason.by === 'ignoreCache' ? 'ignoreCache is set on the op' : `${reason.by} asked for a rerun`;
    case 'result-gone':
      return 'same op and inputs as the earlier build, but its result is not stored (pruned, or kept by another snapshotter)';
    case 'changed':
      return changesText(reason);
    default:
      return assertNever(reason, 'rerun reason');
  }
}

function changesText(reason: RerunChanges): string {
  const parts: string[] = reason.fields.map((f) => {
    if (f.old === undefined) return `${f.path} added ${f.new ?? ''}`.trimEnd();
    if (f.new === undefined) return `${f.path} removed (was ${f.old})`;
    return `${f.path} changed ${f.old} → ${f.new}`;
  });
  if (reason.moreFields !== undefined && reason.moreFields > 0) parts.push(`${reason.moreFields} more field(s) changed`);
  if (reason.inputs.length > 0) parts.push(`input ${reason.inputs.map((n) => JSON.stringify(n)).join(', ')} changed`);
  if (reason.files !== undefined) {
    const { changes, total } = reason.files;
    const listed = changes.map((c) => `${c.change} ${c.path}`).join(', ');
    if (total === undefined) parts.push('local files changed (too many files to list)');
    else parts.push(`local files changed: ${listed}${total > changes.length ? ` (and ${total - changes.length} more)` : ''}`);
  }
  if (reason.other === 'source-content') parts.push("the source's content changed");
  if (reason.other === 'hidden-value') parts.push('a value that is not shown (masked) changed');
  return parts.length === 0 ? 'the op changed' : parts.join('; ');
}
