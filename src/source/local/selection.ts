/**
 * Which files of a `local://NAME` directory a source takes, from its attrs.
 * Each attr is a JSON array of strings, written as a string.
 */
import { ERROR_CODES, KilnError } from '../../errors.js';

/** The selection a local source makes of its directory. */
export interface LocalSelection {
  /** .dockerignore-style patterns of what to take; empty = everything. */
  readonly include: readonly string[];
  /** .dockerignore-style patterns of what to leave out (`!` re-includes). */
  readonly exclude: readonly string[];
  /**
   * Paths taken together with, when they are symlinks, where they lead inside
   * the directory. As in BuildKit they join `include`: with no include
   * patterns, only they (and their targets) are taken.
   */
  readonly followPaths: readonly string[];
}

/**
 * The attrs a local source reads. `includepattern` is BuildKit's spelling;
 * the plural is accepted as well and both lists are combined.
 */
const LOCAL_ATTRS = {
  include: ['local.includepattern', 'local.includepatterns'],
  exclude: ['local.excludepatterns'],
  followPaths: ['local.followpaths'],
} as const;

/** Parses a local source's attrs into its selection; absent attrs select everything. */
export function parseLocalSelection(attrs: Readonly<Record<string, string>>): LocalSelection {
  const list = (keys: readonly string[]): string[] => keys.flatMap((key) => stringArray(attrs, key));
  return {
    include: list(LOCAL_ATTRS.include),
    exclude: list(LOCAL_ATTRS.exclude),
    followPaths: list(LOCAL_ATTRS.followPaths),
  };
}

function stringArray(attrs: Readonly<Record<string, string>>, key: string): string[] {
  const raw = attrs[key];
  if (raw === undefined) return [];
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    value = undefined;
  }
  if (!Array.isArray(value) || !value.every((v): v is string => typeof v === 'string')) {
    throw new KilnError(ERROR_CODES.INVALID_DEFINITION, `source attr ${key} must be a JSON array of strings, like ["src/**"]; got ${JSON.stringify(raw)}`);
  }
  return value;
}
