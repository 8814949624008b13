/**
 * What every exporter takes. An exporter writes a solved result, given as a
 * mounted directory, somewhere outside kiln's store.
 */

/** Options shared by the exporters. */
export interface ExportOptions {
  /** Aborting stops the export, removes what it staged, and rejects with the signal's reason. */
  readonly signal?: AbortSignal;
}
