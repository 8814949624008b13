/**
 * Who owns something in kiln's root. Leases, mountpoints and temp dirs are
 * named after the process that made them, as `PID-STARTTIME`: the start time
 * (from /proc/PID/stat) tells a live owner from a later process that reused
 * its pid, so a crashed process's leftovers can be cleaned without touching
 * those of a process that is still running.
 */
import { readFileSync } from 'node:fs';

/** The kernel's start time of process `pid` (clock ticks since boot), or undefined if it is gone. */
export function processStartTime(pid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may contain spaces and parentheses; fields
  // after the last ')' are plain. starttime is field 22, the 20th after it.
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}

let self: string | undefined;

/** This process's owner token, `PID-STARTTIME`. */
export function currentOwner(): string {
  self ??= `${process.pid}-${processStartTime(process.pid) ?? '0'}`;
  return self;
}

const OWNER_RE = /^(\d+)-(\d+)(?:-|$)/;

/**
 * Whether the owner named at the start of `name` (`PID-STARTTIME[-...]`) is a
 * running process. Names that do not start with an owner token are reported
 * alive, so nothing kiln did not name is ever cleaned up.
 */
export function isOwnerAlive(name: string): boolean {
  const m = OWNER_RE.exec(name);
  if (m === null) return true;
  return processStartTime(Number(m[1])) === m[2];
}

/** An id of the current boot: pids and start times only mean something within one boot. */
export function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim().replaceAll('-', '');
  } catch {
    return 'unknown';
  }
}
