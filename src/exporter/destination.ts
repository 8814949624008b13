/**
 * Where an output may not go. A local output writes into its destination,
 * so a destination that holds kiln's own state, or the sources of the very
 * build, would be overwritten by it (and kiln's root mounted under it); an
 * archive written into kiln's root could land on a blob or a snapshot. These
 * are refused before anything runs.
 */
import { realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { assertNever, ERROR_CODES, KilnError } from '../errors.js';
import type { OutputSpec, ProtectedPaths } from './types.js';

export type { ProtectedPaths } from './types.js';

/** An output's destination to check: a directory (local) or an archive file (tar, oci, docker). */
export interface OutputDestination {
  readonly kind: 'directory' | 'file';
  readonly dest: string;
}

/** A destination refused by the output checks ({@link checkOutputs}); `local` names the binding it would overwrite. */
export class UnsafeOutputError extends KilnError {
  readonly dest: string;
  readonly local: string | undefined;
  constructor(dest: string, message: string, local?: string) {
    super(ERROR_CODES.USAGE, message);
    this.name = 'UnsafeOutputError';
    this.dest = dest;
    this.local = local;
  }
}

/**
 * Refuses a destination that would overwrite what must survive the build.
 * A directory destination may not be `/`, kiln's root, inside it or a parent
 * of it, nor a bound local source directory or a parent of one (a directory
 * inside a local source is fine: `--local context=. -o dest=out` is common).
 * A file destination may not be inside kiln's root, nor a directory. Paths are compared after
 * resolving symlinks, so a link to the root is the root.
 */
export async function checkOutputDestination(output: OutputDestination, protect: ProtectedPaths): Promise<void> {
  const dest = await resolveExisting(output.dest);
  const root = await resolveExisting(protect.root);
  const shown = output.dest === dest ? dest : `${output.dest} (${dest})`;
  if (output.kind === 'file') {
    if (isWithin(dest, root)) throw new UnsafeOutputError(output.dest, `output dest ${shown} is inside kiln's root ${root}: pick a path outside it`);
    if ((await stat(dest).catch(() => undefined))?.isDirectory() === true) {
      throw new UnsafeOutputError(output.dest, `output dest ${shown} is a directory: an archive output needs a file path (e.g. ${path.join(dest, 'out.tar')})`);
    }
    return;
  }
  if (dest === path.parse(dest).root) throw new UnsafeOutputError(output.dest, `local output dest ${shown} is the filesystem root: pick a directory of its own`);
  if (isWithin(dest, root) || isWithin(root, dest)) {
    const relation = dest === root ? 'is' : isWithin(dest, root) ? 'is inside' : 'contains';
    throw new UnsafeOutputError(output.dest, `local output dest ${shown} ${relation} kiln's root ${root}: writing there would overwrite kiln's cache; pick another directory`);
  }
  for (const [name, dir] of protect.locals) {
    const local = await resolveExisting(dir);
    if (isWithin(local, dest)) {
      const relation = local === dest ? 'is' : 'contains';
      throw new UnsafeOutputError(
        output.dest,
        `local output dest ${shown} ${relation} the directory of local source "${name}" (${local}): writing there would overwrite the build's own sources; pick another directory`,
        name,
      );
    }
  }
}

/**
 * Refuses outputs that would overwrite kiln's root or the build's local
 * sources. Call it before solving to refuse before anything runs;
 * exportResult checks again in any case.
 */
export async function checkOutputs(outputs: readonly OutputSpec[], protect: ProtectedPaths): Promise<void> {
  for (const output of outputs) {
    const destination = destinationOf(output);
    if (destination !== undefined) await checkOutputDestination(destination, protect);
  }
}

/** Where an output writes on the host, if it writes to a path there. */
function destinationOf(output: OutputSpec): OutputDestination | undefined {
  switch (output.type) {
    case 'local':
      return { kind: 'directory', dest: output.dest };
    case 'tar':
    case 'oci':
    case 'docker':
      return typeof output.dest === 'string' ? { kind: 'file', dest: output.dest } : undefined;
    case 'image':
      return undefined;
    default:
      return assertNever(output, 'output type');
  }
}

/** True when `inner` is `outer` or below it. */
function isWithin(inner: string, outer: string): boolean {
  const rel = path.relative(outer, inner);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel));
}

/**
 * The absolute path `p` names once symlinks are followed: the longest
 * existing prefix through realpath, the rest as written.
 */
async function resolveExisting(p: string): Promise<string> {
  let head = path.resolve(p);
  const tail: string[] = [];
  for (;;) {
    try {
      return path.join(await realpath(head), ...tail.reverse());
    } catch {
      const parent = path.dirname(head);
      if (parent === head) return path.resolve(p);
      tail.push(path.basename(head));
      head = parent;
    }
  }
}
