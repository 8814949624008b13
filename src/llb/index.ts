/**
 * JSON LLB v1: the raw file format, its loader (validation with JSON-path
 * diagnostics), the canonical form behind digests and cache keys, display
 * names, and a builder for programs.
 */
export * from './types.js';
export type * from './json-types.js';
export { hostPlatform, loadDefinition, type LoadOptions, MAX_DEFINITION_BYTES, parseDefinition, parseDefinitionBytes } from './load.js';
export { type CanonicalParts, canonicalOp, opCacheKey } from './canonical.js';
export { opDisplayName } from './op-name.js';
export {
  type AnyLoadOptions,
  convertDefinition,
  DEFINITION_FORMATS,
  type DefinitionFormat,
  definitionToPb,
  parseAnyDefinition,
  readAnyDefinition,
} from './formats.js';
export { KILN_CAPS } from './caps.js';
export {
  copy,
  DefinitionBuilder,
  type ExecOutputs,
  type ExecSpec,
  type FileActionSpec,
  type FsInput,
  mkdir,
  mkfile,
  type MountSpec,
  type OpOptions,
  type OutputHandle,
  rm,
  scratch,
  symlink,
} from './builder.js';
