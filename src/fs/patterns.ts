/**
 * Docker-style path filters (`.dockerignore`, BuildKit's include/exclude
 * patterns) over slash-separated relative paths.
 *
 * Matching of one glob is delegated to picomatch, configured to behave like
 * Go's `filepath.Match` as Docker extends it: `*` and `?` never cross `/`,
 * `**` spans any number of directories, dot-files are ordinary names, and
 * braces, extglobs and leading `!` are literal (Docker has none of them; we
 * handle `!` ourselves as the exception marker).
 */
import path from 'node:path';
import picomatch from 'picomatch';
import { ERROR_CODES, KilnError } from '../errors.js';

/** Docker-style (.dockerignore / BuildKit include/exclude) path filter over slash-separated relative paths with no leading slash. */
export interface PathFilter {
  /** Whether the entry at `rel` is selected. */
  matches(rel: string, isDir: boolean): boolean;
  /** Whether anything below directory `rel` could be selected (lets walks skip whole subtrees). */
  mayContain(relDir: string): boolean;
}

/** Options of {@link createPathFilter}; both lists empty (or absent) selects everything. */
export interface PathFilterOptions {
  /** Select only these paths (and everything below them). */
  readonly include?: readonly string[];
  /** Then drop these; `!pattern` re-includes, the last matching pattern wins. */
  readonly exclude?: readonly string[];
}

const GLOB_OPTIONS: picomatch.PicomatchOptions = { dot: true, nobrace: true, noextglob: true, nonegate: true };

/** One `/`-separated piece of a pattern: `**`, or a test of one path component. */
type Segment = '**' | ((name: string) => boolean);

interface Pattern {
  readonly segments: readonly Segment[];
  /** Tests a whole relative path. */
  readonly test: (rel: string) => boolean;
  /** `!pattern` in an exclude list. */
  readonly exception: boolean;
  /** An include pattern written with a trailing `/` selects directories only. */
  readonly dirOnly: boolean;
}

function compile(raw: string, list: 'include' | 'exclude'): Pattern | undefined {
  let text = raw.trim();
  const exception = list === 'exclude' && text.startsWith('!');
  if (exception) text = text.slice(1).trim();
  if (text === '') {
    if (exception) throw new KilnError(ERROR_CODES.INVALID_DEFINITION, `invalid exclude pattern "${raw}": "!" must be followed by a pattern`);
    return undefined;
  }
  const dirOnly = list === 'include' && text.endsWith('/');
  // Clean like Docker: "/a//b/./c/" -> "a/b/c"; a leading "/" or "./" means the context root.
  text = path.posix.normalize(`/${text}`).slice(1).replace(/\/$/, '');
  // "/" or "." names the root itself, which no relative path equals: such a pattern selects nothing.
  if (text === '') return undefined;
  // Docker reads a trailing "/**" as "anything strictly below", never the
  // directory itself. Since every match here also counts the parents of the
  // path, "P/*" says exactly that.
  const glob = text.endsWith('/**') ? text.slice(0, -1) : text;
  const segments = text.split('/').map((seg): Segment => {
    if (seg === '**') return '**';
    // "**" glued to other characters still spans directories in Docker: let it match any component.
    if (seg.includes('**')) return () => true;
    return picomatch(seg, GLOB_OPTIONS);
  });
  return { segments, test: picomatch(glob, GLOB_OPTIONS), exception, dirOnly };
}

function compileAll(raw: readonly string[] | undefined, list: 'include' | 'exclude'): Pattern[] {
  return (raw ?? []).map((p) => compile(p, list)).filter((p): p is Pattern => p !== undefined);
}

/** A path component a pattern matches only as itself: no glob character, nothing picomatch might read as syntax. */
const PLAIN_COMPONENT = /^[A-Za-z0-9._-]+$/;

/**
 * The paths that include patterns name, cleaned as matching cleans them,
 * when every pattern is a plain path (no glob or other special character,
 * no trailing `/`); undefined otherwise. With no exclude patterns, what
 * such a filter selects is exactly those paths, everything below them, and
 * the directories leading to them.
 */
export function literalPaths(include: readonly string[]): string[] | undefined {
  const paths = new Set<string>();
  for (const raw of include) {
    const text = raw.trim();
    if (text === '' || text.endsWith('/')) return undefined;
    const cleaned = path.posix.normalize(`/${text}`).slice(1);
    if (cleaned === '' || !cleaned.split('/').every((c) => PLAIN_COMPONENT.test(c) && c !== '.' && c !== '..')) return undefined;
    paths.add(cleaned);
  }
  return paths.size === 0 ? undefined : [...paths].sort();
}

/** `a/b/c` -> [`a`, `a/b`, `a/b/c`]: the path and its parents, outermost first. */
function withParents(rel: string): string[] {
  const parts = rel.split('/');
  return parts.map((_, i) => parts.slice(0, i + 1).join('/'));
}

/**
 * Whether some path strictly below `dirSegments` could match `pattern`
 * (or `dirSegments` itself matches it, which selects all its contents).
 * Walks the pattern segment by segment; `**` may absorb any number of them.
 */
function couldMatchBelow(pattern: readonly Segment[], dirSegments: readonly string[]): boolean {
  const go = (i: number, j: number): boolean => {
    if (i === pattern.length || j === dirSegments.length) return true;
    const seg = pattern[i] as Segment;
    if (seg === '**') return go(i + 1, j) || go(i, j + 1);
    return seg(dirSegments[j] as string) && go(i + 1, j + 1);
  };
  return go(0, 0);
}

/**
 * Builds a Docker-style path filter.
 *
 * - include: an entry is selected when it or one of its parent directories
 *   matches an include pattern. Directories that merely lead to something
 *   included are not `matches` themselves but `mayContain` is true for them;
 *   `walkTree` emits such a directory just before the first selected entry
 *   below it, so no empty directories appear (as BuildKit does).
 * - exclude: the patterns are evaluated in order and the last one that matches
 *   the entry or one of its parents decides; `!pattern` re-includes. An
 *   excluded directory is still entered when an exception could match below it.
 *
 * @throws KilnError INVALID_DEFINITION for a bare `!` exclude pattern.
 */
export function createPathFilter(options: PathFilterOptions): PathFilter {
  const include = compileAll(options.include, 'include');
  const exclude = compileAll(options.exclude, 'exclude');
  const exceptions = exclude.filter((p) => p.exception);

  const included = (rel: string, isDir: boolean): boolean => {
    if (include.length === 0) return true;
    const chain = withParents(rel);
    return include.some((p) => chain.some((candidate, i) => (!p.dirOnly || isDir || i < chain.length - 1) && p.test(candidate)));
  };

  const excluded = (rel: string): boolean => {
    const chain = withParents(rel);
    let result = false;
    for (const p of exclude) {
      // Only a pattern that could flip the current answer needs evaluating.
      if (p.exception !== result) continue;
      if (chain.some((candidate) => p.test(candidate))) result = !p.exception;
    }
    return result;
  };

  return {
    matches(rel, isDir) {
      return included(rel, isDir) && !excluded(rel);
    },
    mayContain(relDir) {
      const segments = relDir.split('/');
      if (include.length > 0 && !include.some((p) => couldMatchBelow(p.segments, segments))) return false;
      if (!excluded(relDir)) return true;
      return exceptions.some((p) => couldMatchBelow(p.segments, segments));
    },
  };
}
