import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ERROR_CODES, KilnError } from '../../../src/errors.js';
import { parseLocalSelection } from '../../../src/source/local/selection.js';

describe('parseLocalSelection', () => {
  it('selects everything when no attr is set', () => {
    assert.deepEqual(parseLocalSelection({}), { include: [], exclude: [], followPaths: [] });
  });

  it('reads each attr as a JSON array of strings, combining both include spellings', () => {
    const selection = parseLocalSelection({
      'local.includepattern': '["src/**", "package.json"]',
      'local.includepatterns': '["README.md"]',
      'local.excludepatterns': '["**/*.log", "!keep.log"]',
      'local.followpaths': '["Dockerfile"]',
      'local.sharedkeyhint': 'ignored',
    });
    assert.deepEqual(selection, {
      include: ['src/**', 'package.json', 'README.md'],
      exclude: ['**/*.log', '!keep.log'],
      followPaths: ['Dockerfile'],
    });
  });

  for (const bad of ['not json', '"a string"', '[1, 2]', '{"a": "b"}']) {
    it(`rejects ${bad}, naming the attr`, () => {
      assert.throws(
        () => parseLocalSelection({ 'local.excludepatterns': bad }),
        (err: unknown) => err instanceof KilnError && err.code === ERROR_CODES.INVALID_DEFINITION && err.message.includes('local.excludepatterns'),
      );
    });
  }
});
