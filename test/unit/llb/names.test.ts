/**
 * Names a file chooses freely (op names, attr and label keys) must never meet
 * a JavaScript object's own machinery: an op named "constructor" or
 * "__proto__" is an ordinary op, or an invalid name, never a crash later.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DefinitionBuilder, mkdir } from '../../../src/llb/builder.js';
import { loadDefinition, parseDefinition } from '../../../src/llb/load.js';
import { assertProblem } from './problems.js';

const PROTOTYPE_NAMES = Object.getOwnPropertyNames(Object.prototype);
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** A definition, as JSON text (so "__proto__" is an ordinary key), where `use` takes the op `name`. */
function takes(name: string): string {
  const ops = `{${JSON.stringify(name)}: {"source": {"identifier": "docker-image://alpine"}}, "use": {"inputs": [${JSON.stringify(name)}], "merge": {"inputs": [0]}}}`;
  return `{"version": 1, "ops": ${ops}, "result": "use", "image": {"base": ${JSON.stringify(name)}, "config": {"labels": {${JSON.stringify(name)}: "x"}}}}`;
}

describe('names that Object.prototype holds', () => {
  it('has names to test, valid and invalid', () => {
    assert.ok(PROTOTYPE_NAMES.includes('constructor') && PROTOTYPE_NAMES.includes('__proto__'));
  });

  for (const name of PROTOTYPE_NAMES) {
    it(`"${name}" as an op name, an input, the image base and a label key`, () => {
      if (NAME_RE.test(name)) {
        const def = parseDefinition(takes(name));
        assert.deepEqual([...def.ops.keys()], [name, 'use']);
        assert.deepEqual(def.ops.get('use')?.inputs, [{ op: name, output: 0 }]);
        assert.equal(def.image?.base, name);
        assert.deepEqual(Object.entries(def.image?.config.labels ?? {}), [[name, 'x']]);
      } else {
        assertProblem(JSON.parse(takes(name)), `ops.${name}`, `invalid op name "${name}"`);
      }
    });

    it(`"${name}" as a reference to an op that does not exist`, () => {
      assertProblem({ version: 1, ops: {}, result: name }, 'result', `no op named "${name}"`);
      assertProblem({ version: 1, ops: {}, result: null, image: { base: name, config: {} } }, 'image.base', `no op named "${name}"`);
    });

    it(`"${name}" as an unknown field and an unknown attr`, () => {
      const json = JSON.parse(`{"version": 1, "ops": {"a": {"source": {"identifier": "local://ctx", "attrs": {${JSON.stringify(name)}: "x"}}}}, "result": null, ${JSON.stringify(name)}: 1}`) as unknown;
      assertProblem(json, `["${name}"]`.replace(/^\["([A-Za-z0-9_$][\w$-]*)"\]$/, '$1'), `unknown field "${name}"`);
      assertProblem(json, `ops.a.source.attrs${/^[A-Za-z0-9_$][\w$-]*$/.test(name) ? `.${name}` : `["${name}"]`}`, `unknown attr "${name}"`);
    });
  }

  it('builds a definition with prototype-named ops that the loader reads back', () => {
    const b = new DefinitionBuilder();
    const first = b.file('constructor', [mkdir('/a')]);
    const second = b.file('toString', [mkdir('/b')], { input: first });
    const third = b.file('hasOwnProperty', [mkdir('/c')], { input: second });
    const def = loadDefinition(JSON.parse(JSON.stringify(b.build(third))));
    assert.deepEqual([...def.ops.keys()], ['constructor', 'toString', 'hasOwnProperty']);
  });
});
