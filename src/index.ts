/**
 * kiln's programmatic API. Open a Session on a root, solve definitions (JSON
 * LLB objects, loaded Definitions, or graphs made with DefinitionBuilder),
 * export the results. Progress is a typed event stream.
 */
export { Session, defaultRoot, type SessionOptions, type SessionPruneReport, type SnapshotterChoice } from './client/session.js';
// The build history a session keeps (Session.history): records and full step logs.
export { HistoryStore } from './history/store.js';
export { writeLogs, type WriteLogsOptions } from './history/logs.js';
export type { BuildRecord, BuildStatus, RecordedError, RetentionPolicy, ShownStatus, VertexRecord } from './history/record.js';
export type { StepLogs } from './progress/step-logs.js';
export { loadConfig, parseConfig, defaultConfigPaths, DEFAULT_CONFIG, type KilnConfig, type LoadConfigOptions } from './client/config.js';
export type { RegistryHostConfig, RegistryHosts } from './content/registry/hosts.js';
export {
  solve,
  exportResult,
  checkOutputs,
  ENTITLEMENTS,
  type Entitlement,
  type ExportResultOptions,
  type ExportReport,
  type OutputReport,
  type CacheReport,
  type CacheExportSpec,
  type CacheImportSpec,
  type CacheMode,
  type ImageOutputOptions,
  type OutputSpec,
  type SolveOptions,
  type SolveResult,
} from './client/solve.js';
export { DEFAULT_EXPORTERS, ExporterRegistry } from './exporter/registry.js';
export { UnsafeOutputError, type ProtectedPaths } from './exporter/destination.js';
export type {
  BaseImage,
  ExportableResult,
  ExportContext,
  Exported,
  Exporter,
  ExportEnvironment,
  ExportSource,
  LayerBlob,
  LayerBlobMemo,
  OutputOf,
  OutputType,
  ResultImage,
} from './exporter/types.js';
export * from './llb/index.js';
export { CacheImportError, ERROR_CODES, ExecError, KilnError, MissingGrantError, OpError, ValidationError, type Grant, type MissingGrantErrorOptions, type Diagnostic, type ErrorCode, type KilnErrorOptions, type OpErrorOptions, type ExecErrorOptions } from './errors.js';
export {
  EXPORT_COUNTERS,
  type ExportCounter,
  type ExportEvent,
  type ExportStatusEvent,
  type ProgressEvent,
  type ProgressGroup,
  type ProgressSink,
  type VertexEvent,
  type LogEvent,
  type StatusEvent,
  type RerunReason,
  type RerunChanges,
  type FieldChange,
  type FileChanges,
} from './progress/types.js';
export { createRenderer, formatReason, type ProgressMode } from './progress/index.js';
export type {
  CacheManager,
  CacheMountOptions,
  CacheMountRef,
  CacheMountSharing,
  ImmutableRef,
  MutableRef,
  PruneOptions,
  PruneReport,
  RecordDescription,
  ResultRef,
  UsageRecord,
} from './cache/types.js';
// What a Worker (and a Session's workers) are made of.
export type { Worker } from './worker/types.js';
export type { WorkerController, WorkerQuery, WorkerRegistration, WorkerStatus } from './worker/controller.js';
export type { ContainerMount, ExitStatus, Executor, ProcessMeta, ProcessSpec, ProcessTerminal, ProcessUser, RunOptions, SeccompStatus } from './executor/types.js';
export type { Mount, MountedDir, SnapshotKey, SnapshotLayer, LayerContent } from './snapshot/types.js';
export type { Logger, LogLevel } from './log.js';
export type { ContentStore } from './content/store.js';
export type { RegistryClient, StreamedUpload } from './content/registry/client.js';
export type { Descriptor, ImageConfig as OciImageConfig, ImagePlatform } from './content/types.js';
export type { ResolvedImage } from './source/image/types.js';
export { DEFAULT_SOURCES, SourceRegistry } from './source/registry.js';
export {
  UnboundSourceError,
  type BindingKind,
  type Source,
  type SourceBindings,
  type SourceContext,
  type SourceInstance,
  type SourceOpOf,
} from './source/types.js';
export type { NoCache } from './ops/graph.js';
export type { FailedExec, ShellOptions } from './ops/types.js';
export type { Digest, CacheKey } from './digest.js';
export { HttpStatusError } from './source/http/status-error.js';
export type { HttpValidatorStore } from './source/http/validators.js';
