/** Small helpers shared by the op adapters. */
import type { ResultRef } from '../cache/types.js';
import { ERROR_CODES, KilnError } from '../errors.js';

/** The input at `index` (-1 = scratch). The loader validated the range. */
export function inputAt(inputs: readonly ResultRef[], index: number): ResultRef {
  if (index === -1) return null;
  const ref = inputs[index];
  if (ref === undefined) throw new KilnError(ERROR_CODES.INTERNAL, `input ${index} out of range`);
  return ref;
}

