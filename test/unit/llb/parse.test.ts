/**
 * What the loader checks in a definition's text and bytes, before and beside
 * the JSON values: repeated keys, the JSON path of a syntax error, UTF-8 and
 * well-formed Unicode, deep nesting and long strings.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Diagnostic } from '../../../src/errors.js';
import { ValidationError } from '../../../src/errors.js';
import { scanJson } from '../../../src/llb/json-syntax.js';
import { parseDefinition, parseDefinitionBytes } from '../../../src/llb/load.js';
import { firstInvalidUtf8 } from '../../../src/llb/utf8.js';
import { assertProblem, withOp } from './problems.js';

function problemsOfText(text: string | Uint8Array): readonly Diagnostic[] {
  try {
    if (typeof text === 'string') parseDefinition(text);
    else parseDefinitionBytes(text);
  } catch (err) {
    if (err instanceof ValidationError) return err.diagnostics;
    throw err;
  }
  return assert.fail('expected a ValidationError, but the definition loaded');
}

function assertTextProblem(text: string | Uint8Array, path: string, fragment: string): void {
  const problems = problemsOfText(text);
  assert.ok(
    problems.some((p) => p.path === path && p.message.includes(fragment)),
    `expected ${path}: ...${fragment}..., got:\n${problems.map((p) => `  ${p.path}: ${p.message}`).join('\n')}`,
  );
}

const IMAGE = '{"source": {"identifier": "docker-image://alpine"}}';

describe('parseDefinition: repeated keys', () => {
  it('rejects a second version at its path', () => {
    assertTextProblem('{"version": 1, "ops": {}, "result": null, "version": 1}', 'version', 'duplicate key "version"');
  });

  it('rejects two ops of one name, even when one is written with escapes', () => {
    assertTextProblem(`{"version": 1, "ops": {"a": ${IMAGE}, "\\u0061": ${IMAGE}}, "result": "a"}`, 'ops.a', 'duplicate key "a"');
  });

  it('finds a repeat behind strings that hold escaped quotes, colons and braces', () => {
    const data = JSON.stringify('a\\": {"x": 1, "x": 2} \\\\');
    const text = `{"version": 1, "ops": {"a": {"file": {"actions": [{"input": -1, "output": 0, "mkfile": {"path": "/f", "data": ${data}, "mode": "0644", "mode": "0600"}}]}}}, "result": "a"}`;
    assert.deepEqual(problemsOfText(text).map((p) => p.path), ['ops.a.file.actions[0].mkfile.mode']);
  });

  it('rejects a repeated field deep inside an op, alongside the other problems', () => {
    const text = `{"version": 1, "ops": {"a": {"file": {"actions": [{"input": -1, "output": 0, "mkdir": {"path": "/x", "path": "/y"}}]}}}, "result": "a", "extra": 1}`;
    const problems = problemsOfText(text);
    assert.deepEqual(
      problems.map((p) => p.path),
      ['ops.a.file.actions[0].mkdir.path', 'extra'],
    );
  });

  it('accepts the same key in different objects', () => {
    const text = `{"version": 1, "ops": {"a": ${IMAGE}, "b": ${IMAGE}}, "result": "a"}`;
    assert.equal(parseDefinition(text).ops.size, 1);
  });
});

describe('parseDefinition: where a problem is', () => {
  it('names the root for a document that is not an object', () => {
    assertTextProblem('null', '(root)', 'expected an object, got null');
    assertTextProblem('', '(root)', 'unexpected end of input');
  });

  it('gives a syntax error the JSON path of the value being read', () => {
    assertTextProblem('{"version": 1, "ops": {"a": {"inputs": [1, 2,]}}}', 'ops.a.inputs[1]', 'trailing comma before "]"');
    assertTextProblem('{"version": 1, "ops": {"a": {"file": tru}}}', 'ops.a.file', 'unexpected "t"');
    assertTextProblem('{"ops": {"a": "x\ny"}}', 'ops.a', 'unescaped control character');
  });

  it('scans 100,000 levels of nesting without running out of stack', () => {
    const deep = `{"version": 1, "ops": {}, "result": null, "x": ${'['.repeat(100_000)}${']'.repeat(100_000)}}`;
    assert.deepEqual(scanJson(deep), { duplicates: [], largeNumbers: new Map() });
    const unclosed = `${'['.repeat(100_000)}`;
    assert.equal(scanJson(unclosed).problem?.message, 'unexpected end of input');
    assertTextProblem(deep, 'x', 'unknown field "x"');
  });

  it('describes a deeply nested value where a name or a number was expected, without serializing it (found by fuzzing)', () => {
    const nested = `${'['.repeat(50_000)}${']'.repeat(50_000)}`;
    assertTextProblem(`{"version": ${nested}, "ops": {}, "result": null}`, 'version', 'unsupported version: expected 1, got an array');
    assertTextProblem(`{"version": 1, "ops": {"a": {"inputs": [${nested}], "merge": {"inputs": [0]}}}, "result": null}`, 'ops.a.inputs[0]', 'got an array');
  });
});

describe('parseDefinitionBytes: UTF-8', () => {
  const bytes = (...parts: (string | number[])[]): Uint8Array =>
    Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : Buffer.from(p))));

  it('loads UTF-8 with a byte-order mark', () => {
    const def = parseDefinitionBytes(bytes([0xef, 0xbb, 0xbf], '{"version": 1, "ops": {}, "result": null, "image": {"config": {"cmd": ["é"]}}}'));
    assert.deepEqual(def.image?.config.cmd, ['é']);
  });

  it('rejects an invalid byte in a path, naming the path, line and column', () => {
    const before = '{"version": 1, "ops": {"a": {"file": {"actions": [{"input": -1, "output": 0,\n"mkdir": {"path": "/é';
    const text = bytes(before, [0xff], '"}}]}}}, "result": "a"}');
    const offset = Buffer.byteLength(before);
    assertTextProblem(text, 'ops.a.file.actions[0].mkdir.path', `line 2, column 22: invalid UTF-8: byte 0xff at byte offset ${offset}`);
  });

  it('rejects an invalid byte in a key at the key', () => {
    assertTextProblem(bytes('{"version": 1, "op', [0xc0, 0x80], '": {}}'), '["op\uFFFD\uFFFD"]', 'invalid UTF-8: byte 0xc0');
  });

  it('finds overlong forms, surrogates, code points above U+10FFFF and cut sequences', () => {
    assert.equal(firstInvalidUtf8(Buffer.from('aé€😀')), -1);
    assert.equal(firstInvalidUtf8(Uint8Array.from([0x61, 0xe0, 0x80, 0x80])), 1); // overlong
    assert.equal(firstInvalidUtf8(Uint8Array.from([0xed, 0xa0, 0x80])), 0); // U+D800
    assert.equal(firstInvalidUtf8(Uint8Array.from([0xf4, 0x90, 0x80, 0x80])), 0); // above U+10FFFF
    assert.equal(firstInvalidUtf8(Uint8Array.from([0x61, 0x62, 0xe2, 0x82])), 2); // cut short
  });

  it('rejects a lone surrogate written as an escape', () => {
    assertProblem(withOp({ file: { actions: [{ input: -1, mkdir: { path: '/a\ud800' } }] } }), 'ops.x.file.actions[0].mkdir.path', 'lone surrogate (\\ud800 at index 2)');
    assertTextProblem('{"version": 1, "ops": {}, "result": null, "image": {"config": {"cmd": ["\\udc00"]}}}', 'image.config.cmd[0]', 'lone surrogate');
  });
});

describe('parseDefinition: long strings', () => {
  it('loads a 20 MB mkfile data field in linear time', () => {
    const data = 'x'.repeat(20 * 1024 * 1024);
    const text = JSON.stringify({ version: 1, ops: { a: { file: { actions: [{ input: -1, output: 0, mkfile: { path: '/f', data } }] } } }, result: 'a' });
    const started = Date.now();
    const def = parseDefinition(text);
    const op = def.ops.get('a');
    assert.ok(op?.body.kind === 'file' && op.body.file.actions[0]?.kind === 'mkfile');
    assert.equal(op.body.file.actions[0].mkfile.data.length, data.length);
    // Generous for a shared machine: linear work on 20 MB is well under a second alone.
    assert.ok(Date.now() - started < 15_000, `took ${Date.now() - started} ms`);
  });
});
