/**
 * Executors: run processes in containers. The OCI spec builder is shared by
 * every executor that hands bundles to an OCI runtime; runc is the first.
 */
export type * from './types.js';
export {
  ALL_CAPABILITIES,
  DEFAULT_CAPABILITIES,
  OCI_VERSION,
  buildOciSpec,
  capabilitiesInMask,
  defaultHostname,
  hostsFile,
  ociJson,
  ociProcess,
  type OciCapabilities,
  type OciDevice,
  type OciDeviceRule,
  type OciLinux,
  type OciMount,
  type OciNamespace,
  type OciProcess,
  type OciRlimit,
  type OciSpec,
  type OciSpecOptions,
  type OciUser,
} from './oci-spec.js';
export { createRuncExecutor, type RuncExecutorOptions } from './runc.js';
export type { OciSeccomp, OciSeccompRule, SeccompProfile } from './seccomp.js';
