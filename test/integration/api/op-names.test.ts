/** Ops named like Object.prototype's members solve like any other op. */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DefinitionBuilder, exportResult, mkfile, Session, solve } from '../../../src/index.js';

describe('solve() with prototype-named ops', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-op-names-'));
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  it('solves a chain of ops named constructor, toString, valueOf and hasOwnProperty', async () => {
    const b = new DefinitionBuilder();
    let last = b.file('constructor', [mkfile('/constructor', 'c')]);
    for (const name of ['toString', 'valueOf', 'hasOwnProperty']) last = b.file(name, [mkfile(`/${name}`, name)], { input: last });
    const definition = b.build(last);
    await using session = await Session.open({ root: join(dir, 'root') });
    await using result = await solve(session, definition, {});
    await exportResult(result, [{ type: 'local', dest: join(dir, 'out') }]);
    assert.equal(await readFile(join(dir, 'out', 'constructor'), 'utf8'), 'c');
    assert.equal(await readFile(join(dir, 'out', 'hasOwnProperty'), 'utf8'), 'hasOwnProperty');
  });
});
