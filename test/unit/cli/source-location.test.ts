/** The Dockerfile lines shown above a failed op's error. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatSourceLocation } from '../../../src/cli/source-location.js';

describe('formatSourceLocation', () => {
  const text = ['FROM busybox', 'WORKDIR /app', 'RUN make \\', '  all', 'CMD ["x"]', ''].join('\n');

  it('marks every line of the op, with two lines before and one after', () => {
    assert.equal(
      formatSourceLocation({ file: 'Dockerfile', lines: [{ start: 3, end: 4 }], text }),
      ['Dockerfile:3-4', '-'.repeat(20), ' 1 | FROM busybox', ' 2 | WORKDIR /app', ' 3 | >>> RUN make \\', ' 4 | >>>   all', ' 5 | CMD ["x"]', '-'.repeat(20), ''].join('\n'),
    );
  });

  it('without the text, only the place; without lines, only the file', () => {
    assert.equal(formatSourceLocation({ file: 'Dockerfile', lines: [{ start: 2, end: 2 }] }), 'Dockerfile:2\n');
    assert.equal(formatSourceLocation({ file: 'Dockerfile', lines: [] }), 'Dockerfile\n');
  });
});
