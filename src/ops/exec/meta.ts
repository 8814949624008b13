/**
 * The executor Meta of an exec op: the LLB's meta with defaults applied and
 * the user resolved to numbers in the op's own root filesystem.
 */
import { ERROR_CODES, KilnError } from '../../errors.js';
import type { ProcessMeta, ProcessUser } from '../../executor/types.js';
import { readIdFile } from '../../fs/etc-files.js';
import type { LayeredTree } from '../../fs/layered-tree.js';
import { resolveInTree } from '../../fs/safe-path.js';
import type { ExecOp } from '../../llb/types.js';

/** The PATH a process gets when the op sets none (as BuildKit and Docker do). */
export const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * Builds the process Meta; `rootfs` is the root the process will see. A
 * missing working directory is created by the runtime (runc makes it, 0755
 * and owned by root, before it starts the process), as BuildKit does; it
 * stays in the result. Symlinks on the way to it are resolved here, inside
 * the rootfs: the runtime would otherwise try to make a dangling link's
 * name a directory (and fail with "file exists").
 */
export async function processMeta(exec: ExecOp, rootfs: LayeredTree): Promise<ProcessMeta> {
  const { meta } = exec;
  const withPath = meta.env.some((e) => e.startsWith('PATH=')) ? [...meta.env] : [DEFAULT_PATH, ...meta.env];
  // Proxy settings come after the op's own env, as buildkitd appends them.
  const env = meta.proxyEnv === undefined ? withPath : [...withPath, ...meta.proxyEnv];
  return {
    args: meta.args,
    env,
    cwd: `/${(await resolveInTree(rootfs, meta.cwd)).join('/')}`,
    user: await resolveUser(rootfs, meta.user),
    hostname: meta.hostname,
    extraHosts: meta.extraHosts,
    ulimits: meta.ulimit,
    cgroupParent: meta.cgroupParent,
    network: exec.network,
    security: exec.security,
  };
}

/**
 * `""` is root; `uid[:gid]` and `name[:group]` as Docker reads them: a name
 * is looked up in the rootfs's /etc/passwd, a user without a group gets its
 * primary group (0 for an unknown numeric uid), and supplementary groups
 * come from the rootfs's /etc/group memberships.
 */
export async function resolveUser(rootfs: LayeredTree, spec: string): Promise<ProcessUser> {
  if (spec === '') return { uid: 0, gid: 0, additionalGids: [] };
  const [userPart = '', groupPart] = spec.split(':', 2);
  const passwd = await readIdFile(rootfs, '/etc/passwd');
  const groups = await readIdFile(rootfs, '/etc/group');
  const entry = /^\d+$/.test(userPart) ? [...passwd.entries()].find(([, e]) => e.id === Number(userPart)) : [userPart, passwd.get(userPart)] as const;
  const name = entry?.[0];
  const found = entry?.[1];
  if (found === undefined && !/^\d+$/.test(userPart)) {
    throw new KilnError(ERROR_CODES.EXEC_FAILED, `unknown user "${userPart}": no such entry in /etc/passwd of the root filesystem`);
  }
  const uid = found?.id ?? Number(userPart);
  let gid = found?.gid ?? 0;
  if (groupPart !== undefined && groupPart !== '') {
    if (/^\d+$/.test(groupPart)) gid = Number(groupPart);
    else {
      const group = groups.get(groupPart);
      if (group === undefined) throw new KilnError(ERROR_CODES.EXEC_FAILED, `unknown group "${groupPart}": no such entry in /etc/group of the root filesystem`);
      gid = group.id;
    }
  }
  const additionalGids = name === undefined || groupPart !== undefined ? [] : [...groups.values()].filter((g) => g.members.includes(name) && g.id !== gid).map((g) => g.id);
  return { uid, gid, additionalGids };
}
