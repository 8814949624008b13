/**
 * The prologue every executor runs alike before handing a container to its
 * runtime: the OCI spec, built from the process meta and the mounts with
 * the host's facts (what `insecure` grants, the sandbox's seccomp filter,
 * the host's devices), and the hosts file the spec binds at /etc/hosts.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { buildOciSpec, hostsFile, type OciSpec, type OciSpecOptions } from './oci-spec.js';
import { hostSpecOptions, runtimeError, type SandboxSeccomp } from './process-facts.js';

/** What an executor holds of its host, the same for every container it runs. */
export interface HostFacts {
  /** What `security: insecure` grants (see boundingCapabilities). */
  readonly capabilities: readonly string[];
  /** The filter of sandboxed containers; undefined: none on this host. */
  readonly seccomp: SandboxSeccomp['filter'];
}

/** An executor's host facts, whose filter is read (worked out, the first time) only as a container's spec is made. */
export function hostFacts(capabilities: readonly string[], seccomp: SandboxSeccomp): HostFacts {
  return {
    capabilities,
    get seccomp(): SandboxSeccomp['filter'] {
      return seccomp.filter;
    },
  };
}

/** A container's spec options, but for what the prologue fills in; `dir` is the container's own directory. */
export type ContainerSpecOptions = Omit<OciSpecOptions, 'hostsPath' | 'allCapabilities' | 'seccomp' | 'hostDevices'> & {
  readonly dir: string;
  readonly host: HostFacts;
  /** The host paths the container uses, to name a full disk if the hosts file cannot be written. */
  readonly hostPaths: readonly string[];
};

/** Builds the container's spec and writes its hosts file (DIR/hosts), which the spec binds. */
export async function containerSpec(options: ContainerSpecOptions): Promise<OciSpec> {
  const { dir, host, hostPaths, ...spec } = options;
  const hostsPath = path.join(dir, 'hosts');
  const built = buildOciSpec({ ...spec, hostsPath, ...(await hostSpecOptions(host.capabilities, host.seccomp, spec.meta)) });
  try {
    // Synchronous: a small file in the container's own directory, written on every exec op.
    writeFileSync(hostsPath, hostsFile(built.hostname, spec.meta.extraHosts));
  } catch (err) {
    throw runtimeError(`cannot write the hosts file of container "${spec.id}"`, (err as Error).message, { hostPaths, cause: err });
  }
  return built;
}
