/** Exporters: a solved result written to a host directory or a tar archive. */
export { exportLocal } from './local.js';
export { exportTar } from './tar.js';
export type { ExportOptions } from './types.js';
