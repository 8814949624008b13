/**
 * The executor Meta of an exec op: the LLB's meta with defaults applied and
 * the user resolved to numbers in the op's own root filesystem.
 */
import { ERROR_CODES, KilnError } from '../../errors.js';
import type { ProcessMeta, ProcessUser } from '../../executor/types.js';
import { readIdFile } from '../../fs/etc-files.js';
import type { LayeredTree } from '../../fs/layered-tree.js';
import { resolveInTree } from '../../fs/safe-path.js';
import { DEFAULT_PATH_ENV, type ExecOp } from '../../llb/types.js';

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
  const withPath = meta.env.some((e) => e.startsWith('PATH=')) ? [...meta.env] : [DEFAULT_PATH_ENV, ...meta.env];
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

const NUMERIC = /^\d+$/;

/** An id as BuildKit's fast path reads it: digits, or `root` for 0. */
function plainId(text: string): number | undefined {
  if (text === 'root') return 0;
  return NUMERIC.test(text) ? Number(text) : undefined;
}

/**
 * The process's user as BuildKit (and runc's user lookup) resolves it in the
 * rootfs:
 *
 * - `uid:gid` (digits, or `root` for 0) is taken as it is, with no lookup.
 * - `name` or `uid` is looked up in /etc/passwd (a uid that has no entry
 *   is used alone, with gid 0); its supplementary groups are every group of
 *   /etc/group that lists the matched user's name, in file order.
 * - `user:group` takes the group from /etc/group (a gid that has no entry
 *   is used alone) and no supplementary groups.
 * - `""` is root, looked up like `0` (so root gets the groups that list it,
 *   as on Alpine), and never fails.
 *
 * The primary gid always leads the supplementary groups unless they already
 * hold it, as BuildKit gives every process (`USER nobody` then `RUN id`
 * shows `groups=65534(nogroup)`).
 */
export async function resolveUser(rootfs: LayeredTree, spec: string): Promise<ProcessUser> {
  const [userPart = '', groupPart = ''] = (spec === '' ? '0' : spec).split(':', 2);
  const fastUid = plainId(userPart);
  const fastGid = plainId(groupPart);
  if (fastUid !== undefined && fastGid !== undefined) return { uid: fastUid, gid: fastGid, additionalGids: [fastGid] };

  const passwd = await readIdFile(rootfs, '/etc/passwd');
  const groups = await readIdFile(rootfs, '/etc/group');
  const byId = NUMERIC.test(userPart);
  const entry = byId ? [...passwd.entries()].find(([, e]) => e.id === Number(userPart)) : ([userPart, passwd.get(userPart)] as const);
  const name = entry?.[1] === undefined ? undefined : entry[0];
  if (name === undefined && !byId) {
    if (spec === '') return { uid: 0, gid: 0, additionalGids: [0] };
    throw new KilnError(ERROR_CODES.EXEC_FAILED, `unknown user "${userPart}": no such entry in /etc/passwd of the root filesystem`);
  }
  const uid = entry?.[1]?.id ?? Number(userPart);
  let gid = entry?.[1]?.gid ?? 0;
  let supplementary: number[] = [];
  if (groupPart !== '') {
    if (NUMERIC.test(groupPart)) gid = Number(groupPart);
    else {
      const group = groups.get(groupPart);
      if (group === undefined) throw new KilnError(ERROR_CODES.EXEC_FAILED, `unknown group "${groupPart}": no such entry in /etc/group of the root filesystem`);
      gid = group.id;
    }
  } else if (name !== undefined) {
    supplementary = [...groups.values()].filter((g) => g.members.includes(name)).map((g) => g.id);
  }
  return { uid, gid, additionalGids: supplementary.includes(gid) ? supplementary : [gid, ...supplementary] };
}
