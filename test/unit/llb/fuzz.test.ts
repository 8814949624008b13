/**
 * Fuzzing the loader: thousands of malformed definitions (./malformed.ts),
 * each of which must load or be rejected with a ValidationError whose every
 * diagnostic names a JSON path — never a TypeError, a RangeError, a stack
 * overflow or an internal error — and quickly. fast-check prints the seed and
 * the shrunk case of a failure; `FUZZ_SEED=<seed>` replays it.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ERROR_CODES, KilnError, ValidationError } from '../../../src/errors.js';
import { parseDefinition } from '../../../src/llb/load.js';
import { opDisplayName } from '../../../src/llb/op-name.js';
import { malformedDefinition } from './malformed.js';

const RUNS = 2000;
/** Per case: a hang detector, not a timing (the slowest real case is far below it, even on a busy machine). */
const MAX_CASE_MS = 10_000;

/** Loads `text`; returns "loaded" or "rejected", and throws on any other outcome. */
export function loadOutcome(text: string): 'loaded' | 'rejected' {
  try {
    const def = parseDefinition(text);
    for (const op of def.ops.values()) opDisplayName(op);
    return 'loaded';
  } catch (err) {
    if (!(err instanceof ValidationError)) {
      const what = err instanceof KilnError ? `${err.code}: ${err.message}` : err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      throw new Error(`the loader threw something other than a ValidationError: ${what}`, { cause: err });
    }
    assert.notEqual(err.code, ERROR_CODES.INTERNAL);
    assert.ok(err.diagnostics.length > 0, 'a ValidationError with no diagnostics');
    for (const d of err.diagnostics) assert.ok(d.path !== '', `a diagnostic without a JSON path: ${d.message}`);
    return 'rejected';
  }
}

describe('loader fuzz', () => {
  it(`loads or rejects ${RUNS} malformed definitions, each with JSON paths, quickly`, () => {
    const seed = process.env['FUZZ_SEED'] === undefined ? Date.now() : Number(process.env['FUZZ_SEED']);
    const outcomes = { loaded: 0, rejected: 0 };
    fc.assert(
      fc.property(malformedDefinition, (text) => {
        const started = performance.now();
        outcomes[loadOutcome(text)]++;
        const ms = performance.now() - started;
        assert.ok(ms < MAX_CASE_MS, `took ${Math.round(ms)} ms`);
      }),
      { numRuns: RUNS, seed },
    );
    // Most cases must be rejected, or the generator has stopped breaking things.
    assert.ok(outcomes.rejected > RUNS / 2, JSON.stringify(outcomes));
  });
});
