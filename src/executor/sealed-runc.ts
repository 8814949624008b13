/**
 * A sealed in-memory copy of the runc binary, which kiln runs runc from.
 *
 * Every `runc init` (the container's first process, before it execs the
 * user's command) must not run from the host's runc file, or the
 * container could overwrite that file through /proc/self/exe
 * (CVE-2019-5736). runc 1.1 therefore makes a read-only bind mount of its
 * own binary in the host's mount namespace (a mount, a remount and a
 * detaching unmount, serialized with every other mount on the host), or
 * copies itself into a memfd, in every container it starts. It does
 * neither when it already runs from a memfd that is sealed against writes
 * and resizes: the container cannot change such a file. So kiln makes that
 * copy once per process and runs runc from it (as runc's own `memfd-bind`
 * tool does for a whole host), and the per-container work is gone.
 *
 * Node cannot call memfd_create(2) or fcntl(2), so perl (essential on
 * Debian: perl-base) makes the memfd, copies runc into it and seals it;
 * kiln opens it through /proc before perl exits and keeps it open. Where
 * any of that fails (another architecture, no perl, a kernel that forbids
 * executable memfds), runc is run from its file as before.
 */
import { closeSync, openSync } from 'node:fs';
import type { Logger } from '../log.js';
import { spawnChild } from '../spawner.js';

/** memfd_create(2)'s system call number by Node's architecture name (perl has no wrapper for it). */
const MEMFD_CREATE: Readonly<Record<string, number>> = { x64: 319, arm64: 279, riscv64: 279 };

/**
 * Makes the memfd (MFD_CLOEXEC | MFD_ALLOW_SEALING), copies ARGV[1] into
 * it, adds the seals runc checks for (F_ADD_SEALS with seal, shrink, grow
 * and write), checks that those are exactly its seals and that it can be
 * executed (a kernel with `vm.memfd_noexec` set adds an exec seal and
 * clears the mode's x bits), prints the descriptor's number, and waits for
 * its stdin to close, so the memfd lives until kiln has opened it too.
 */
const SEAL_SCRIPT = `
use strict;
my ($nr, $src) = @ARGV;
my $name = "runc_cloned:/proc/self/exe";
my $fd = syscall($nr + 0, $name, 3);
die "memfd_create: $!\\n" if $fd < 0;
open(my $out, ">&=", $fd) or die "fdopen: $!\\n";
open(my $in, "<", $src) or die "$src: $!\\n";
binmode $in; binmode $out;
my $buf;
while (my $n = sysread($in, $buf, 1 << 20)) { syswrite($out, $buf) == $n or die "write: $!\\n"; }
fcntl($out, 1033, 15) or die "F_ADD_SEALS: $!\\n";
my $seals = fcntl($out, 1034, 0) or die "F_GET_SEALS: $!\\n";
die "sealed with $seals, not 15\\n" if $seals != 15;
die "not executable\\n" unless ((stat($out))[2] & 0111) == 0111;
$| = 1;
print "$fd\\n";
<STDIN>;
`;

/** The sealed copy: the path to run it by, and how to let it go. */
export interface SealedRunc {
  /** `/proc/PID/fd/N` of this process's descriptor of the memfd. */
  readonly path: string;
  /** Closes the descriptor; runc must not be started from `path` after. */
  close(): void;
}

/**
 * Makes the sealed copy of `runc`; undefined, with the reason logged,
 * where it cannot be made.
 */
export async function sealRunc(runc: string, logger?: Logger): Promise<SealedRunc | undefined> {
  const nr = MEMFD_CREATE[process.arch];
  if (nr === undefined) return undefined;
  let fd: number | undefined;
  try {
    fd = await new Promise<number>((resolve, reject) => {
      // Through the resident spawner, which knows perl's pid before its output flows.
      const perl = spawnChild({ file: 'perl', args: ['-e', SEAL_SCRIPT, String(nr), runc], stdin: 'pipe', stdout: 'pipe', stderr: 'pipe' });
      let out = '';
      let err = '';
      perl.stderr?.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
      perl.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
        out += chunk;
        if (!out.endsWith('\n')) return;
        try {
          // Opened through perl's descriptor: the same memfd, now held by this process.
          resolve(openSync(`/proc/${perl.pid}/fd/${Number(out)}`, 'r'));
        } catch (e) {
          reject(e);
        } finally {
          perl.stdin?.end();
        }
      });
      perl.once('error', reject);
      perl.once('close', (code) => reject(new Error(`perl exited with ${code ?? 'a signal'}: ${err.trim()}`)));
    });
    const sealed = `/proc/${process.pid}/fd/${fd}`;
    const held = fd;
    return { path: sealed, close: () => closeSync(held) };
  } catch (err) {
    if (fd !== undefined) closeSync(fd);
    logger?.debug({ err }, 'runc runs from its file: no sealed copy');
    return undefined;
  }
}
