import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { sha256 } from '../../../src/digest.js';
import { convertDefinition, parseAnyDefinition, readAnyDefinition } from '../../../src/llb/formats.js';
import { decodeDefinition } from '../../../src/llb/pb-convert.js';
import { PB_FIXTURES } from '../../support/pb-fixtures.js';

const DIR = new URL('../../../../test/fixtures/pb/', import.meta.url);

if (process.env['KILN_WRITE_PB_FIXTURES'] === '1') {
  for (const [file, make] of Object.entries(PB_FIXTURES)) writeFileSync(new URL(file, DIR), make());
}

describe('pb.Definition fixtures (dockerfile2llb-shaped)', () => {
  for (const [file, make] of Object.entries(PB_FIXTURES)) {
    const bytes = new Uint8Array(readFileSync(new URL(file, DIR)));

    it(`${file}: the committed bytes are what the generator encodes`, () => {
      assert.deepEqual(bytes, make());
    });

    it(`${file}: pb → JSON → pb keeps every op's bytes, so every digest`, () => {
      const original = decodeDefinition(bytes).entries;
      const json = convertDefinition(bytes, 'json');
      const again = decodeDefinition(convertDefinition(json, 'pb')).entries;
      assert.deepEqual(
        again.map((e) => e.digest),
        original.map((e) => e.digest),
      );
      for (const [i, e] of again.entries()) assert.deepEqual(e.bytes, original[i]?.bytes);
      // The whole Definition too: metadata (result pointer's caps included) and order.
      assert.deepEqual(convertDefinition(json, 'pb'), bytes);
    });

    it(`${file}: pb → dump-llb → pb keeps the Definition`, () => {
      const dump = convertDefinition(bytes, 'dump');
      assert.equal(readAnyDefinition(dump).format, 'dump');
      assert.deepEqual(convertDefinition(dump, 'pb'), bytes);
    });

    it(`${file}: loads, each op under BuildKit's digest, named from llb.customname`, () => {
      const def = parseAnyDefinition(bytes, { file });
      const digests = new Set(decodeDefinition(bytes).entries.map((e) => e.digest));
      for (const op of def.ops.values()) assert.ok(digests.has(op.digest), `${op.name} has digest ${op.digest}`);
      assert.ok([...def.ops.keys()].some((name) => /COPY|RUN|FROM|load-build-context/.test(name)), [...def.ops.keys()].join(', '));
    });
  }

  it('image.pb: exec fields land in the loaded ops', () => {
    const def = parseAnyDefinition(new Uint8Array(readFileSync(new URL('image.pb', DIR))));
    const execs = [...def.ops.values()].flatMap((op) => (op.body.kind === 'exec' ? [op.body.exec] : []));
    const last = execs.at(-1);
    assert.deepEqual(last?.meta.proxyEnv, ['HTTP_PROXY=http://127.0.0.1:3128', 'http_proxy=http://127.0.0.1:3128']);
    assert.deepEqual(last?.meta.validExitCodes, [0, 1]);
    assert.equal(last?.meta.user, 'nobody');
    const mounts = execs[0]?.mounts.map((m) => m.type);
    assert.deepEqual(mounts, ['bind', 'cache', 'tmpfs', 'secret']);
  });

  it('copy.pb: copy fields land in the loaded ops', () => {
    const def = parseAnyDefinition(new Uint8Array(readFileSync(new URL('copy.pb', DIR))));
    const copies = [...def.ops.values()].flatMap((op) => (op.body.kind === 'file' ? op.body.file.actions : [])).flatMap((a) => (a.kind === 'copy' ? [a.copy] : []));
    assert.deepEqual(copies[0]?.owner, { user: 1000, group: 1000 });
    assert.deepEqual(copies[0]?.mode, { kind: 'bits', bits: 0o640 });
    assert.equal(copies[0]?.timestamp, undefined);
    assert.equal(copies[1]?.allowWildcard, true);
    assert.deepEqual(copies[2]?.excludePatterns, ['skip*.txt', 'dir']);
    assert.equal(sha256(new Uint8Array()).length, 71);
  });
});
