/**
 * Owners of file actions: numeric ids, or names looked up in the TARGET
 * filesystem's /etc/passwd and /etc/group, never the host's.
 */
import type { OwnerIds } from '../../fs/metadata.js';
import { readIdFile } from '../../fs/etc-files.js';
import type { ChownOpt } from '../../llb/types.js';
import { ERROR_CODES, KilnError } from '../../errors.js';

async function lookup(root: string, file: '/etc/passwd' | '/etc/group', name: string, what: string): Promise<[number, number]> {
  const found = (await readIdFile(root, file)).get(name);
  if (found !== undefined) return [found.id, found.gid];
  // A number written as a string is an id, as Docker reads `--chown=1000`.
  if (/^\d+$/.test(name)) return [Number(name), Number(name)];
  throw new KilnError(ERROR_CODES.FILE_ACTION, `unknown ${what} "${name}": no such entry in ${file} of the target filesystem`);
}

/**
 * The numeric owner an action gives what it creates, or undefined to leave
 * the default. As in BuildKit: a user given by id also sets the group to the
 * same id, a user given by name sets the group to the user's primary group,
 * an explicit group overrides either, and a missing user means root.
 *
 * @throws KilnError FILE_ACTION when a name is not in the target's /etc/passwd or /etc/group.
 */
export async function resolveOwner(target: string, owner: ChownOpt | undefined): Promise<OwnerIds | undefined> {
  if (owner === undefined) return undefined;
  let uid = 0;
  let gid = 0;
  if (typeof owner.user === 'number') [uid, gid] = [owner.user, owner.user];
  else if (owner.user !== undefined) [uid, gid] = await lookup(target, '/etc/passwd', owner.user, 'user');
  if (typeof owner.group === 'number') gid = owner.group;
  else if (owner.group !== undefined) [gid] = await lookup(target, '/etc/group', owner.group, 'group');
  return { uid, gid };
}
