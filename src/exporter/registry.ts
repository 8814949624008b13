/**
 * The exporters by output type. Adding one is a variant of OutputSpec
 * (types.ts), one file holding its {@link Exporter}, and one line in
 * BUILT_IN below (plus its `-o` keys in cli/build.ts). Each is loaded when
 * an output first needs it, so a build pays only for the exporters it uses.
 */
import { ERROR_CODES, KilnError } from '../errors.js';
import type { Exporter, OutputType } from './types.js';

/** Loads the exporter of one type (held under that type). */
type Loader = () => Promise<unknown>;

const BUILT_IN: { readonly [T in OutputType]: () => Promise<Exporter<T>> } = {
  local: async () => (await import('./local.js')).localExporter,
  tar: async () => (await import('./tar.js')).tarExporter,
  oci: async () => (await import('./image-output.js')).ociExporter,
  docker: async () => (await import('./image-output.js')).dockerExporter,
  image: async () => (await import('./image-output.js')).imageExporter,
};

/** Exporters by output type. */
export class ExporterRegistry {
  readonly #byType: ReadonlyMap<OutputType, Loader>;

  constructor(loaders: ReadonlyMap<OutputType, Loader> = new Map(Object.entries(BUILT_IN) as [OutputType, Loader][])) {
    this.#byType = loaders;
  }

  /** A registry with `exporter` in place of the one of its type. */
  with<T extends OutputType>(exporter: Exporter<T>): ExporterRegistry {
    return new ExporterRegistry(new Map([...this.#byType, [exporter.type, async () => exporter]]));
  }

  /** The exporter of `type`. */
  async load<T extends OutputType>(type: T): Promise<Exporter<T>> {
    const loader = this.#byType.get(type);
    if (loader === undefined) throw new KilnError(ERROR_CODES.INTERNAL, `no exporter for ${type} outputs`);
    // Every loader is stored under the type of the exporter it loads (BUILT_IN's type and with() see to it).
    return (await loader()) as Exporter<T>;
  }
}

/** The built-in exporters: local, tar, oci, docker, image. */
export const DEFAULT_EXPORTERS = new ExporterRegistry();
