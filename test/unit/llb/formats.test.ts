import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { KilnError, ValidationError } from '../../../src/errors.js';
import { copy, DefinitionBuilder, mkfile } from '../../../src/llb/builder.js';
import { convertDefinition, definitionToPb, parseAnyDefinition, readAnyDefinition } from '../../../src/llb/formats.js';
import { parseDefinitionBytes } from '../../../src/llb/load.js';
import { decodeDefinition } from '../../../src/llb/pb-convert.js';
import { decodePb, encodePb } from '../../../src/llb/pb-wire.js';
import { stringifyGo, toGoJson } from '../../../src/llb/dump-llb.js';
import type { Definition } from '../../../src/llb/types.js';
import { buildOpFixture, copyFixture, unsupportedCapFixture } from '../../support/pb-fixtures.js';

const EXAMPLES = new URL('../../../../llb-examples/', import.meta.url);
const text = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);

/** What a definition builds, independent of op names: each op's name-free digest and metadata, and the result. */
function shape(def: Definition): unknown {
  const ops = [...def.ops.values()].map((op) => ({ digest: op.digest, metadata: op.metadata, outputs: op.outputCount }));
  const result = def.result === null ? null : { digest: def.ops.get(def.result.op)?.digest, output: def.result.output };
  return { ops: ops.sort((a, b) => a.digest.localeCompare(b.digest)), result };
}

function diagnostics(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof ValidationError) return err.diagnostics.map((d) => `${d.path}: ${d.message}`).join('\n');
    if (err instanceof KilnError) return err.message;
    throw err;
  }
  return assert.fail('expected an error');
}

describe('definition forms', () => {
  for (const file of readdirSync(EXAMPLES).filter((f) => f.endsWith('.json'))) {
    it(`llb-examples/${file} survives JSON → pb → JSON (and → dump →) unchanged but for op names`, () => {
      const json = new Uint8Array(readFileSync(new URL(file, EXAMPLES)));
      const original = parseDefinitionBytes(json);
      const pb = convertDefinition(json, 'pb');
      assert.equal(readAnyDefinition(pb).format, 'pb');
      const back = convertDefinition(pb, 'json');
      const image = (JSON.parse(text(json)) as { image?: unknown }).image;
      // The image config has no place in a Definition (a frontend returns it beside).
      const reloaded = parseDefinitionBytes(back);
      assert.deepEqual(shape(reloaded), shape(original));
      if (image === undefined) assert.equal(reloaded.image, undefined);
      // Loaded from protobuf, ops carry BuildKit's digests; the dump lines load to the same.
      assert.deepEqual(shape(parseAnyDefinition(convertDefinition(pb, 'dump'))), shape(parseAnyDefinition(pb)));
      // And once in protobuf, the bytes are stable.
      assert.deepEqual(convertDefinition(back, 'pb'), pb);
    });
  }

  it('tells the forms apart by content, and --format forces one', () => {
    const pb = copyFixture();
    const json = convertDefinition(pb, 'json');
    const dump = convertDefinition(pb, 'dump');
    assert.equal(readAnyDefinition(pb).format, 'pb');
    assert.equal(readAnyDefinition(json).format, 'json');
    assert.equal(readAnyDefinition(dump).format, 'dump');
    assert.equal(readAnyDefinition(dump, { format: 'dump' }).format, 'dump');
    assert.match(diagnostics(() => parseAnyDefinition(json, { format: 'pb' })), /pb\.Definition|Definition/);
  });

  it('a file no form reads says which forms were tried and why each failed', () => {
    const garbage = new Uint8Array([0x0a, 0x05, 0xff, 0xff, 0x00, 0x13, 0x37, 0x99]);
    const message = diagnostics(() => parseAnyDefinition(garbage, { file: 'x.bin' }));
    assert.match(message, /^\(root\): not a definition kiln reads; tried pb\.Definition \(protobuf\): .+ \| JSON LLB: .+ \| dump-llb JSON lines: .+/);
  });

  it('an empty file is refused unless --format pb says it is the empty Definition (scratch)', () => {
    assert.match(diagnostics(() => parseAnyDefinition(new Uint8Array())), /the definition is empty/);
    assert.equal(parseAnyDefinition(new Uint8Array(), { format: 'pb' }).result, null);
  });

  it('JSON that is clearly JSON LLB gets its own errors, not the list of forms', () => {
    const message = diagnostics(() => parseAnyDefinition(new TextEncoder().encode('{"version": 1,\n "ops": {}, "result": "x"}')));
    assert.match(message, /no op named "x"/);
  });

  it('refuses a cap kiln lacks, naming the cap and the op, before anything runs', () => {
    const message = diagnostics(() => parseAnyDefinition(unsupportedCapFixture()));
    assert.match(message, /ops\.ctx\.metadata\.caps\["exec\.meta\.cdi"\]: needs BuildKit capability "exec\.meta\.cdi"/);
  });

  it('refuses BuildOp clearly', () => {
    assert.match(diagnostics(() => parseAnyDefinition(buildOpFixture())), /ops\.nested\.build: BuildOp .* not supported/);
  });

  it('refuses a field number it does not know, naming the message', () => {
    const op = encodePb('Op', { source: { identifier: 'local://x' } });
    const withUnknown = new Uint8Array([...op, 0xa8, 0x01, 0x01]); // field 21, varint 1
    const def = encodePb('Definition', { def: [withUnknown, encodePb('Op', { inputs: [{ digest: 'sha256:00', index: 0 }] })] });
    assert.match(diagnostics(() => parseAnyDefinition(def)), /field number 21 is not a field of pb\.Op/);
  });

  it('required paths (COPY --parents) and attemptUnpack (ADD) go to pb and back', () => {
    const b = new DefinitionBuilder();
    const ctx = b.local('ctx', { name: 'context' });
    const raw = b.build(b.file('add', [copy(ctx, '/src', '/', { includePatterns: ['a'], requiredPaths: ['/src/a'], attemptUnpack: true })]));
    const pb = definitionToPb(raw);
    const fileOp = decodeDefinition(pb).entries[1]?.op['file'] as { actions: { copy: Record<string, unknown> }[] };
    assert.deepEqual(fileOp.actions[0]?.copy['required_paths'], ['/src/a']);
    assert.equal(fileOp.actions[0]?.copy['attemptUnpackDockerCompatibility'], true);
    assert.deepEqual(shape(parseAnyDefinition(pb)), shape(parseAnyDefinition(convertDefinition(convertDefinition(pb, 'json'), 'pb'))));
  });

  it('the builder emits pb that decodes to the same ops', () => {
    const b = new DefinitionBuilder();
    const ctx = b.local('ctx', { name: 'context' });
    const raw = b.build(b.file('app', [copy(ctx, '/', '/app', { mode: 'u+x' })]));
    const pb = definitionToPb(raw);
    const fileOp = decodeDefinition(pb).entries[1]?.op["file"] as { actions: { copy: Record<string, unknown> }[] };
    assert.equal(fileOp.actions[0]?.copy['modeStr'], 'u+x');
    assert.equal(fileOp.actions[0]?.copy['mode'], undefined, 'mode 0 with a modeStr, as BuildKit writes it');
    assert.equal(fileOp.actions[0]?.copy['timestamp'], -1);
    assert.deepEqual(shape(parseAnyDefinition(pb)), shape(parseAnyDefinition(convertDefinition(convertDefinition(pb, 'json'), 'pb'))));
  });

  it('keeps int64 values past 2^53 exact through every form', () => {
    const b = new DefinitionBuilder();
    const raw = b.build(b.file('f', [mkfile('/x', 'x', { timestamp: '1700000000123456789' })]));
    const pb = definitionToPb(raw);
    const dump = convertDefinition(pb, 'dump');
    assert.match(text(dump), /"timestamp":1700000000123456789/);
    assert.deepEqual(convertDefinition(dump, 'pb'), pb);
    assert.match(text(convertDefinition(pb, 'json')), /"timestamp": "1700000000123456789"/);
  });

  it('writes dump-llb lines in encoding/json shape', () => {
    const op = decodePb('Op', encodePb('Op', { inputs: [{ digest: 'sha256:ab', index: 0 }], file: { actions: [{ input: 0, secondaryInput: -1, output: 0, mkfile: { path: '/<x>', mode: 0o644 } }] } }));
    assert.equal(
      stringifyGo(toGoJson('Op', op)),
      '{"inputs":[{"digest":"sha256:ab"}],"Op":{"file":{"actions":[{"secondaryInput":-1,"Action":{"mkfile":{"path":"/\\u003cx\\u003e","mode":420}}}]}}}',
    );
  });
});
