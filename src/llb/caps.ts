/**
 * BuildKit's capability ids (`solver/pb/caps.go`) that a Definition's
 * OpMetadata may list as needed. buildkitd refuses a Definition that needs a
 * cap it lacks; kiln does the same, before anything runs, naming the cap and
 * the op, so a graph is never built with a feature silently missing.
 */

/** The caps kiln implements: the ops, sources, mounts and fields behind each work as buildkitd's do. */
export const KILN_CAPS: ReadonlySet<string> = new Set([
  'source.image',
  'source.image.resolvemode',
  'source.image.layerlimit',
  'source.local',
  'source.local.unique',
  'source.local.sessionid',
  'source.local.includepatterns',
  'source.local.followpaths',
  'source.local.excludepatterns',
  'source.local.sharedkeyhint',
  'source.local.differ',
  'source.ocilayout',
  'source.git',
  'source.git.keepgitdir',
  'source.git.fullurl',
  'source.git.httpauth',
  'source.git.knownsshhosts',
  'source.git.mountsshsock',
  'source.git.subdir',
  'source.http',
  'source.http.checksum',
  'source.http.perm',
  // BuildKit's id for uid/gid is spelled so.
  'soruce.http.uidgid',
  'source.http.uidgid',
  'source.http.header',
  'source.http.auth',
  'exec.meta.base',
  'exec.meta.cgroup.parent',
  'exec.meta.network',
  'exec.meta.proxyenv',
  'exec.meta.security',
  'exec.meta.setsdefaultpath',
  'exec.meta.ulimit',
  'exec.meta.removemountstubs.recursive',
  'exec.mount.bind',
  'exec.mount.bind.readwrite-nooutput',
  'exec.mount.cache',
  'exec.mount.cache.sharing',
  'exec.mount.cache.content',
  'exec.mount.selector',
  'exec.mount.tmpfs',
  'exec.mount.tmpfs.size',
  'exec.mount.secret',
  'exec.mount.ssh',
  'exec.secretenv',
  'exec.validexitcode',
  'file.base',
  'file.rm.wildcard',
  'file.rm.nofollowsymlink',
  'file.copy.includeexcludepatterns',
  'file.copy.alwaysreplaceexistingdestpaths',
  'file.copy.modestring',
  'file.copy.requiredpaths',
  'file.symlink.create',
  'constraints',
  'platform',
  'meta.ignorecache',
  'meta.description',
  'meta.exportcache',
  'mergeop',
  'diffop',
]);

/** Why a cap kiln knows of is missing, when there is more to say than "not implemented". */
const MISSING_WHY: Readonly<Record<string, string>> = {
  'exec.meta.cdi': 'CDI devices (RUN --device) need a device registry kiln does not have',
  'exec.meta.linux.resources': 'per-step cgroup limits are not implemented',
  'exec.meta.security.devices.v1': 'device allow-lists are not implemented',
  'source.buildop.llbfilename': 'BuildOp (nested builds) is not supported',
  passthroughop: 'PassthroughOp is not supported',
};

/** What is wrong with needing `cap`, or undefined when kiln has it. */
export function capProblem(cap: string): string | undefined {
  if (KILN_CAPS.has(cap)) return undefined;
  const why = MISSING_WHY[cap] ?? 'kiln does not implement it';
  return `needs BuildKit capability "${cap}": ${why}`;
}
