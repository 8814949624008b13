import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatBytes, parseBinding, parseBytes, parseCsvAttrs, parseDuration, parsePositiveInt } from '../../../src/cli/options.js';

describe('CLI value syntaxes', () => {
  it('parses buildctl-style key=value lists', () => {
    assert.deepEqual({ ...parseCsvAttrs('--output', 'type=local,dest=out/dir') }, { type: 'local', dest: 'out/dir' });
    assert.throws(() => parseCsvAttrs('--output', 'local'), /expected key=value/);
    assert.throws(() => parseCsvAttrs('--output', 'type=local,type=tar'), /type is given twice/);
    // Keys named like Object.prototype's members are plain keys, not inherited values.
    assert.equal(parseCsvAttrs('--output', 'type=local')['constructor'], undefined);
    assert.deepEqual(Object.keys(parseCsvAttrs('--secret', '__proto__=x,id=a')), ['__proto__', 'id']);
  });
  it('takes a double-quoted field whole, commas and doubled quotes included (CSV, as buildctl)', () => {
    assert.deepEqual({ ...parseCsvAttrs('--export-cache', 'type=local,"cache-mounts=a,b",dest=d') }, { type: 'local', 'cache-mounts': 'a,b', dest: 'd' });
    assert.deepEqual({ ...parseCsvAttrs('--x', '"k=say ""hi"", then go"') }, { k: 'say "hi", then go' });
    assert.deepEqual({ ...parseCsvAttrs('--x', 'a=1,"b=2"') }, { a: '1', b: '2' });
    // A quote that does not open the field is an ordinary character.
    assert.deepEqual({ ...parseCsvAttrs('--x', 'a="1",b=2') }, { a: '"1"', b: '2' });
    assert.throws(() => parseCsvAttrs('--x', 'a=1,"b=2'), /--x "a=1,\"b=2": a quoted field is not closed/);
    assert.throws(() => parseCsvAttrs('--x', '"b=2"x,c=1'), /a quoted field must end at a comma/);
  });
  it('parses NAME=DIR bindings, keeping = in the value', () => {
    assert.deepEqual(parseBinding('--local', 'ctx=./a=b'), ['ctx', './a=b']);
    assert.throws(() => parseBinding('--local', 'ctx'), /expected NAME=VALUE/);
    assert.throws(() => parseBinding('--local', '=dir'), /expected NAME=VALUE/);
  });
  it('parses sizes and durations', () => {
    assert.equal(parseBytes('--keep-storage', '10GB'), 10 * 1024 ** 3);
    assert.equal(parseBytes('--keep-storage', '512mb'), 512 * 1024 ** 2);
    assert.equal(parseBytes('--keep-storage', '1000'), 1000);
    assert.throws(() => parseBytes('--keep-storage', 'lots'), /expected a size/);
    assert.throws(() => parseBytes('--keep-storage', '5constructor'), /expected a size/);
    assert.equal(parseDuration('--keep-duration', '1h30m'), 90 * 60_000);
    assert.equal(parseDuration('--keep-duration', '48h'), 48 * 3_600_000);
    assert.equal(parseDuration('--keep-duration', '7d'), 7 * 86_400_000);
    assert.throws(() => parseDuration('--keep-duration', '10 minutes'), /expected a duration/);
    assert.equal(parsePositiveInt('--parallelism', '4'), 4);
    assert.throws(() => parsePositiveInt('--parallelism', '0'), /positive integer/);
  });
  it('formats sizes for tables', () => {
    assert.equal(formatBytes(512), '512B');
    assert.equal(formatBytes(1536), '1.50KiB');
  });
});
