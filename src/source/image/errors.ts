/** Errors of image sources that the build's prechecks raise too (kept small: prechecks load no image code). */
import { ERROR_CODES, KilnError } from '../../errors.js';

/** An `oci-layout://NAME` source with no `--oci-layout NAME=DIR`. */
export function unboundLayoutError(op: string, name: string): KilnError {
  return new KilnError(ERROR_CODES.IMAGE, `oci-layout source "${name}" is not bound: pass --oci-layout ${name}=DIR`, { op, field: `ops.${op}.source.identifier` });
}
