/** Exporters: a solved result written to a host directory, a tar, an image archive or kiln's image store. */
export { checkOutputDestination, checkOutputs, type OutputDestination, type ProtectedPaths, UnsafeOutputError } from './destination.js';
export { exportResult, type ExportResultOptions } from './export.js';
export { DEFAULT_EXPORTERS, ExporterRegistry } from './registry.js';
export { exportLocal } from './local.js';
export { exportTar } from './tar.js';
export { imageNames, parseNames } from './image-names.js';
export type * from './types.js';
