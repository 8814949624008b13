/**
 * Network namespaces that outlive the process that made them: each is an
 * nsfs bind mount on a file of kiln's (what `ip netns add` does under
 * /run/netns, here in kiln's own directory so that kiln sweeps only its
 * own). util-linux's `unshare --net=FILE` makes one; unmounting the file
 * and removing it ends the namespace once no process is in it.
 */
import { rm, writeFile } from 'node:fs/promises';
import { exec } from '../command.js';
import { ERROR_CODES, KilnError } from '../errors.js';

/**
 * Makes a new network namespace bound at `file` (which must not exist),
 * with its loopback up: one process, `unshare` running `ip` inside the new
 * namespace (a runtime that joins a namespace leaves its interfaces as they
 * are, and a container expects 127.0.0.1 to work).
 */
export async function createNetns(file: string): Promise<void> {
  await writeFile(file, '', { flag: 'wx', mode: 0o600 });
  const { code, stderr } = await exec({ file: 'unshare', args: [`--net=${file}`, 'ip', 'link', 'set', 'lo', 'up'] });
  if (code !== 0) {
    await rm(file, { force: true });
    throw new KilnError(ERROR_CODES.NETWORK, `cannot make a network namespace at ${file}: ${stderr.trim() || `unshare exited with ${code ?? 'a signal'}`}`);
  }
}

/** Unbinds and removes the namespace at `file`; nothing is left whatever state it was in. */
export async function removeNetns(file: string): Promise<void> {
  // Not mounted (a crash between the two steps of create) is fine: the file still goes.
  await exec({ file: 'umount', args: ['--lazy', file] });
  await rm(file, { force: true });
}
