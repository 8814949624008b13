/**
 * The file op over refs: each action works on a mutable snapshot of its
 * input, and its result is committed when something else needs it. The
 * action semantics themselves live in ./file/ and see only directories.
 */
import type { CacheManager, ImmutableRef, MutableRef, ResultRef } from '../cache/types.js';
import { asKilnError, ERROR_CODES, OpError } from '../errors.js';
import { opCacheKey } from '../llb/canonical.js';
import { opDisplayName } from '../llb/op-name.js';
import type { FileAction, Op } from '../llb/types.js';
import type { SolverOp } from '../solver/types.js';
import { emptyDir, inputAt } from './inputs.js';
import type { OpContext } from './types.js';

/** The solver op of a `file` op. */
export function fileOp(op: Op & { body: { kind: 'file' } }, ctx: OpContext): SolverOp<ResultRef> {
  return {
    cacheKey: async ({ inputKeys }) => opCacheKey(op, inputKeys),
    run: async (inputs, { signal }) => runActions(op, op.body.file.actions, inputs, ctx.worker.cache, signal),
  };
}

/**
 * Runs the actions in order. An action whose input is the previous action's
 * result, used by nobody else, keeps working on the same mutable snapshot
 * (no commit in between), so a long action list costs one layer, not many.
 */
async function runActions(
  op: Op,
  actions: readonly FileAction[],
  inputs: readonly ResultRef[],
  cache: CacheManager,
  signal: AbortSignal,
): Promise<ResultRef[]> {
  const base = inputs.length;
  const uses = countUses(actions, base);
  const results = new Map<number, ResultRef>();
  const outputs: ResultRef[] = [];
  let open: { index: number; ref: MutableRef } | undefined;
  const description = { description: opDisplayName(op) };

  const resolveInput = async (index: number): Promise<ResultRef> => {
    if (index < base) return inputAt(inputs, index);
    const actionIndex = index - base;
    if (open !== undefined && open.index === actionIndex) {
      const committed = await open.ref.commit();
      open = undefined;
      results.set(actionIndex, committed);
    }
    return results.get(actionIndex) ?? null;
  };

  try {
    for (const [i, action] of actions.entries()) {
      signal.throwIfAborted();
      let mutable: MutableRef;
      if (open !== undefined && action.input === base + open.index && (uses.get(open.index) ?? 0) === 1 && actions[open.index]?.output === -1) {
        mutable = open.ref;
        open = undefined;
      } else {
        const parent = await resolveInput(action.input);
        mutable = await cache.newMutable(parent, description);
      }
      open = { index: i, ref: mutable };
      const secondary = action.kind === 'copy' ? await resolveInput(action.secondaryInput) : null;
      await applyOnMounts(op, i, action, mutable, secondary, signal);
      if (action.output >= 0 || (uses.get(i) ?? 0) > 1) {
        results.set(i, await mutable.commit());
        open = undefined;
      }
    }
    for (const [i, action] of actions.entries()) {
      if (action.output < 0) continue;
      const ref = results.get(i);
      outputs[action.output] = ref === undefined || ref === null ? null : ref.clone();
    }
    return outputs;
  } finally {
    await open?.ref.release();
    for (const ref of results.values()) await ref?.release();
  }
}

async function applyOnMounts(
  op: Op,
  index: number,
  action: FileAction,
  target: MutableRef,
  secondary: ImmutableRef | null,
  signal: AbortSignal,
): Promise<void> {
  await using targetDir = await target.mount();
  await using sourceDir = action.kind !== 'copy' ? undefined : secondary === null ? await emptyDir() : await secondary.mount();
  try {
    // The action code (and fs-xattr, picomatch) loads only when an action runs, never on a cached build.
    const { applyFileAction } = await import('./file/apply.js');
    await applyFileAction(action, { target: targetDir.path, ...(sourceDir === undefined ? {} : { source: sourceDir.path }), signal });
  } catch (err) {
    const e = asKilnError(err, ERROR_CODES.FILE_ACTION);
    throw new OpError(e.code, `${action.kind} (action ${index}): ${e.message}`, {
      op: op.name,
      field: `ops.${op.name}.file.actions[${index}].${action.kind}`,
      cause: err,
    });
  }
}

/** How many later actions read each action's result. */
function countUses(actions: readonly FileAction[], base: number): Map<number, number> {
  const uses = new Map<number, number>();
  const bump = (index: number): void => {
    if (index >= base) uses.set(index - base, (uses.get(index - base) ?? 0) + 1);
  };
  for (const action of actions) {
    bump(action.input);
    if (action.kind === 'copy') bump(action.secondaryInput);
  }
  return uses;
}
