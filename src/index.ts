/**
 * kiln's programmatic API. Open a Session on a root, solve definitions (JSON
 * LLB objects, loaded Definitions, or graphs made with DefinitionBuilder),
 * export the results. Progress is a typed event stream.
 */
export { Session, defaultRoot, type SessionOptions, type SnapshotterChoice } from './client/session.js';
export { solve, exportResult, type ImageOutputOptions, type OutputSpec, type SolveOptions, type SolveResult } from './client/solve.js';
export * from './llb/index.js';
export { ERROR_CODES, KilnError, OpError, ValidationError, type Diagnostic, type ErrorCode } from './errors.js';
export type { ProgressEvent, ProgressSink, VertexEvent, LogEvent, StatusEvent } from './progress/types.js';
export { createRenderer, type ProgressMode } from './progress/index.js';
export type { ImmutableRef, MutableRef, ResultRef, UsageRecord, PruneOptions, PruneReport } from './cache/types.js';
export type { Worker } from './worker/types.js';
export type { NoCache } from './ops/graph.js';
export type { Digest, CacheKey } from './digest.js';
