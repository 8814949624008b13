/**
 * Facts about processes that every executor needs alike: which capabilities
 * kiln may hand out, and how an exit code reads.
 */
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import { ALL_CAPABILITIES, capabilitiesInMask } from './oci-spec.js';
import type { ExitStatus } from './types.js';

/**
 * The capabilities this process may hand out (its bounding set). `insecure`
 * asks for exactly these: asking for one the runtime lacks (kiln itself in a
 * restricted container) would make every privileged container fail.
 */
export async function boundingCapabilities(): Promise<string[]> {
  const status = await readFile('/proc/self/status', 'utf8').catch(() => '');
  const hex = /^CapBnd:\s*([0-9a-fA-F]+)$/m.exec(status)?.[1];
  return hex === undefined ? [...ALL_CAPABILITIES] : capabilitiesInMask(BigInt(`0x${hex}`));
}

/**
 * Runtimes report a process killed by signal N as 128+N (the shell
 * convention): a code above 128 is reported as that signal, even though a
 * process could exit with it on its own.
 */
export function exitStatus(code: number): ExitStatus {
  const signal = code > 128 ? Object.entries(os.constants.signals).find(([, n]) => n === code - 128)?.[0] : undefined;
  return signal === undefined ? { exitCode: code } : { exitCode: code, signal };
}
