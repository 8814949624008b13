/**
 * The sources by scheme. Adding a scheme is one file (a {@link Source}) and
 * one line in BUILT_IN below; an identifier whose scheme has no Source is
 * refused before anything runs.
 */
import { ERROR_CODES, OpError } from '../errors.js';
import { httpsSource, plainHttpSource } from './http/source.js';
import { dockerImageSource } from './image/docker-image.js';
import { ociLayoutSource } from './image/oci-layout.js';
import { gitSources } from './git/source.js';
import { localSource } from './local/source.js';
import { identifierSite, type Source, type SourceBindings, type SourceContext, type SourceInstance, type SourceOpOf } from './types.js';

const BUILT_IN: readonly Source[] = [localSource, dockerImageSource, ociLayoutSource, httpsSource, plainHttpSource, ...gitSources];

/** Sources by scheme: the one place a source op's identifier meets its Source. */
export class SourceRegistry {
  readonly #byScheme: ReadonlyMap<string, Source>;

  constructor(sources: readonly Source[] = BUILT_IN) {
    this.#byScheme = new Map(sources.map((s) => [s.scheme, s]));
  }

  /** A registry with `source` added (replacing one of the same scheme). */
  with(source: Source): SourceRegistry {
    return new SourceRegistry([...[...this.#byScheme.values()].filter((s) => s.scheme !== source.scheme), source]);
  }

  /** The schemes registered, without `://`. */
  get schemes(): readonly string[] {
    return [...this.#byScheme.keys()];
  }

  /** Refuses, before anything runs, a source op this build cannot serve (unknown scheme, unbound name). */
  check(op: SourceOpOf, bindings: SourceBindings): void {
    this.#sourceOf(op).check(op, bindings);
  }

  /** The op's instance for one solve. */
  resolve(op: SourceOpOf, ctx: SourceContext): SourceInstance {
    return this.#sourceOf(op).resolve(op, ctx);
  }

  #sourceOf(op: SourceOpOf): Source {
    const { identifier } = op.body.source;
    // The loader accepts only `SCHEME://...` identifiers.
    const scheme = identifier.slice(0, Math.max(0, identifier.indexOf('://')));
    const source = this.#byScheme.get(scheme);
    if (source === undefined) {
      throw new OpError(ERROR_CODES.UNSUPPORTED_SOURCE, `${scheme}:// sources are not supported yet by this version of kiln (${identifier})`, identifierSite(op));
    }
    return source;
  }
}

/** The built-in sources: local, docker-image, oci-layout, https, http, git (git://, git+https://, git+file://). */
export const DEFAULT_SOURCES = new SourceRegistry();
