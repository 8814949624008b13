import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ERROR_CODES, KilnError } from '../../../src/errors.js';
import { createPathFilter, literalPaths } from '../../../src/fs/patterns.js';

/** [include, exclude, path, isDir, selected] */
type Row = [readonly string[], readonly string[], string, boolean, boolean];

const TABLE: readonly Row[] = [
  // No patterns: everything.
  [[], [], 'a/b/c', false, true],
  // Exclude: a match on the path or any parent excludes it.
  [[], ['*.log'], 'x.log', false, false],
  [[], ['*.log'], 'dir/x.log', false, true], // `*` does not cross `/`
  [[], ['dir'], 'dir/sub/file', false, false],
  [[], ['dir/*'], 'dir', true, true],
  [[], ['dir/*'], 'dir/a/b', false, false],
  [[], ['**/*.log'], 'x.log', false, false],
  [[], ['**/*.log'], 'a/b/x.log', false, false],
  [[], ['a/**/b'], 'a/b', true, false],
  [[], ['a/**/b'], 'a/x/y/b/f', false, false],
  [[], ['a/**/b'], 'a/x/c', false, true],
  [[], ['*'], '.hidden', false, false], // dots are ordinary names
  [[], ['?.txt'], 'a.txt', false, false],
  [[], ['?.txt'], 'ab.txt', false, true],
  [[], ['[a-c].txt'], 'b.txt', false, false],
  [[], ['[a-c].txt'], 'd.txt', false, true],
  [[], ['{a,b}'], 'a', false, true], // no brace expansion in Docker
  [[], ['foo/**'], 'foo', true, true], // "foo/**" is what is below foo, not foo
  [[], ['foo/**'], 'foo/x/y', false, false],
  // Cleaning: leading "/" and "./", doubled and trailing slashes.
  [[], ['/a//b/'], 'a/b/c', false, false],
  [[], ['./a'], 'a', true, false],
  // Exceptions: the last matching pattern wins.
  [[], ['*.md', '!README.md'], 'README.md', false, true],
  [[], ['*.md', '!README.md'], 'CHANGES.md', false, false],
  [[], ['!README.md', '*.md'], 'README.md', false, false],
  [[], ['docs', '!docs/keep.md'], 'docs/keep.md', false, true],
  [[], ['docs', '!docs/keep.md'], 'docs/other.md', false, false],
  [[], ['docs', '!docs/keep.md'], 'docs', true, false],
  // Include: a path under an included one is included.
  [['src'], [], 'src/a/b.ts', false, true],
  [['src'], [], 'test/a.ts', false, false],
  [['*.go'], [], 'main.go', false, true],
  [['*.go'], [], 'pkg/x.go', false, false],
  [['**/*.go'], [], 'pkg/x.go', false, true],
  // A leading directory is not selected itself (the walk emits it when needed).
  [['a/b/c.txt'], [], 'a', true, false],
  [['a/b/c.txt'], [], 'a/b/c.txt', false, true],
  // A trailing "/" in an include pattern selects directories only.
  [['build/'], [], 'build', true, true],
  [['build/'], [], 'build', false, false],
  [['build/'], [], 'build/out.bin', false, true],
  // Include and exclude together.
  [['src'], ['**/*.test.ts'], 'src/a.ts', false, true],
  [['src'], ['**/*.test.ts'], 'src/a.test.ts', false, false],
];

describe('createPathFilter: matches', () => {
  for (const [include, exclude, rel, isDir, expected] of TABLE) {
    it(`include ${JSON.stringify(include)} exclude ${JSON.stringify(exclude)}: ${rel}${isDir ? '/' : ''} -> ${expected}`, () => {
      assert.equal(createPathFilter({ include, exclude }).matches(rel, isDir), expected);
    });
  }
});

describe('createPathFilter: mayContain', () => {
  const cases: [readonly string[], readonly string[], string, boolean][] = [
    [[], [], 'any', true],
    [[], ['node_modules'], 'node_modules', false], // excluded, no exception: skip the subtree
    [[], ['node_modules'], 'src', true],
    [[], ['docs', '!docs/keep.md'], 'docs', true], // an exception lies below
    [[], ['docs', '!**/keep.md'], 'docs', true],
    [[], ['docs', '!other/keep.md'], 'docs', false],
    [['a/b/c.txt'], [], 'a', true],
    [['a/b/c.txt'], [], 'a/b', true],
    [['a/b/c.txt'], [], 'x', false],
    [['a/*/c'], [], 'a/zz', true],
    [['a/*/c'], [], 'b/zz', false],
    [['**/*.go'], [], 'deep/er', true],
    [['src'], [], 'src/sub', true],
    [['src'], ['src/gen'], 'src/gen', false],
  ];
  for (const [include, exclude, rel, expected] of cases) {
    it(`include ${JSON.stringify(include)} exclude ${JSON.stringify(exclude)}: ${rel}/ -> ${expected}`, () => {
      assert.equal(createPathFilter({ include, exclude }).mayContain(rel), expected);
    });
  }
});

describe('createPathFilter: bad patterns', () => {
  it('rejects a bare "!"', () => {
    assert.throws(
      () => createPathFilter({ exclude: ['*.log', '!'] }),
      (err: unknown) => err instanceof KilnError && err.code === ERROR_CODES.INVALID_DEFINITION && err.message.includes('"!"'),
    );
  });

  it('ignores empty patterns and ones naming the root', () => {
    const filter = createPathFilter({ include: ['', '/'], exclude: ['  ', '.'] });
    assert.equal(filter.matches('anything', false), true);
  });
});

describe('literalPaths', () => {
  it('gives the plain paths include patterns name, cleaned as matching cleans them, sorted and once each', () => {
    assert.deepEqual(literalPaths(['busybox']), ['busybox']);
    assert.deepEqual(literalPaths(['/src//main.go', './go.mod', 'a/./b/../c.txt', 'go.mod']), ['a/c.txt', 'go.mod', 'src/main.go']);
    assert.deepEqual(literalPaths(['.env', 'my-file_1.tar.gz']), ['.env', 'my-file_1.tar.gz']);
  });

  it('gives nothing when any pattern is not a plain path, or names the root, or none is given', () => {
    for (const include of [[], ['*.go'], ['a', 'b?'], ['[ab]'], ['a\\*'], ['dir/'], ['{a,b}'], ['+(a)'], ['a b'], [''], ['/'], ['.'], ['..'], ['x', 'é']]) {
      assert.equal(literalPaths(include), undefined, JSON.stringify(include));
    }
  });

  it('selects, as the filter does, the paths, what is below them and the directories leading to them', () => {
    const include = ['a/b/c.txt', 'd'];
    assert.deepEqual(literalPaths(include), ['a/b/c.txt', 'd']);
    const filter = createPathFilter({ include });
    for (const [rel, isDir, selected] of [
      ['a/b/c.txt', false, true],
      ['d', true, true],
      ['d/e/f', false, true],
      ['a/b/c.txt.bak', false, false],
      ['a/b/other', false, false],
      ['dd', false, false],
    ] as const) {
      assert.equal(filter.matches(rel, isDir), selected, rel);
    }
    assert.equal(filter.mayContain('a/b'), true);
    assert.equal(filter.mayContain('x'), false);
  });
});
