/**
 * Network namespaces that outlive the process that made them: each is an
 * nsfs bind mount on a file of kiln's (what `ip netns add` does under
 * /run/netns, here in kiln's own directory so that kiln sweeps only its
 * own). util-linux's `unshare --net=FILE` makes one; unmounting the file
 * and removing it ends the namespace once no process is in it.
 */
import { spawn } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { ERROR_CODES, KilnError } from '../errors.js';

/**
 * Makes a new network namespace bound at `file` (which must not exist),
 * with its loopback up: one process, `unshare` running `ip` inside the new
 * namespace (a runtime that joins a namespace leaves its interfaces as they
 * are, and a container expects 127.0.0.1 to work).
 */
export async function createNetns(file: string): Promise<void> {
  await writeFile(file, '', { flag: 'wx', mode: 0o600 });
  const { code, stderr } = await run('unshare', [`--net=${file}`, 'ip', 'link', 'set', 'lo', 'up']);
  if (code !== 0) {
    await rm(file, { force: true });
    throw new KilnError(ERROR_CODES.NETWORK, `cannot make a network namespace at ${file}: ${stderr.trim() || `unshare exited with ${code ?? 'a signal'}`}`);
  }
}

/** Unbinds and removes the namespace at `file`; nothing is left whatever state it was in. */
export async function removeNetns(file: string): Promise<void> {
  // Not mounted (a crash between the two steps of create) is fine: the file still goes.
  await run('umount', ['--lazy', file]);
  await rm(file, { force: true });
}

function run(file: string, args: readonly string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(file, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    const err: Buffer[] = [];
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.on('error', (e) => resolve({ code: -1, stderr: e.message }));
    child.on('close', (code) => resolve({ code, stderr: Buffer.concat(err).toString('utf8') }));
  });
}
