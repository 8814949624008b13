/**
 * Fuzzing `kiln build` itself: a seeded sample of malformed definitions
 * (test/unit/llb/malformed.ts), some also broken as bytes (invalid UTF-8),
 * each run through the real CLI. Every run must end with exit 0, 1 or 2,
 * name a JSON path when the definition is invalid, and never report an
 * internal error. fast-check prints the seed; `FUZZ_SEED=<seed>` replays it.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { malformedDefinition } from '../unit/llb/malformed.js';
import { kiln, removeDir, tempDir } from './harness.js';

const RUNS = 30;

/** The definition's bytes, with an invalid UTF-8 byte put in at `at` when `at` is given. */
function bytesOf(text: string, at: number | undefined): Buffer {
  const bytes = Buffer.from(text);
  if (at === undefined) return bytes;
  const cut = at % (bytes.length + 1);
  return Buffer.concat([bytes.subarray(0, cut), Buffer.from([0xff]), bytes.subarray(cut)]);
}

describe('kiln build fuzz', () => {
  let work: string;
  before(async () => {
    work = await tempDir('fuzz');
  });
  after(async () => removeDir(work));

  it(`exits 0, 1 or 2 with a JSON path and no internal error for ${RUNS} malformed definitions`, async () => {
    const seed = process.env['FUZZ_SEED'] === undefined ? Date.now() : Number(process.env['FUZZ_SEED']);
    let n = 0;
    await fc.assert(
      fc.asyncProperty(malformedDefinition, fc.option(fc.nat(), { freq: 4 }), async (text, badByte) => {
        const file = join(work, `case-${n++}.json`);
        await writeFile(file, bytesOf(text, badByte ?? undefined));
        // --debug prints the error code, so an internal error cannot hide behind its message.
        const r = await kiln(['build', file, '--root', join(work, 'root'), '--progress', 'plain', '--debug']);
        assert.ok([0, 1, 2].includes(r.exitCode), `exit ${r.exitCode}\n${r.stderr.slice(-2000)}`);
        assert.ok(!r.stderr.includes('[E_INTERNAL]'), r.stderr.slice(-2000));
        if (r.stderr.includes('[E_INVALID_DEFINITION]')) {
          // `error: FILE: PATH: message`: the first diagnostic names its path, whose
          // bracketed keys are JSON strings and may hold spaces (`ops.a["b c"]`).
          assert.match(r.stderr, /^error: [^\n]*\.json: (?:[^\s[]|\[(?:\d+|"(?:[^"\\]|\\.)*")\])+: /m, r.stderr.slice(0, 2000));
        }
      }),
      { numRuns: RUNS, seed, endOnFailure: true },
    );
  });
});
