/**
 * git:// connections through a relay that sets TCP_NODELAY.
 *
 * git's client writes a protocol request as several small writes on a
 * socket with Nagle's algorithm on: the first goes out, the rest wait for
 * its ACK, which the server delays (it waits for the whole request before
 * it answers), so every request costs a delayed ACK, ~40 ms on Linux, even
 * on loopback. A `git ls-remote` of a git:// remote took 44 ms, 40 of them
 * waiting; through this relay, 8 ms. git runs the relay instead of
 * connecting itself when GIT_PROXY_COMMAND names it (git:// only; its
 * arguments are the host and the port): it connects, sets TCP_NODELAY, and
 * copies bytes both ways. perl (perl-base, which kiln already needs) with
 * no module but Socket, a few ms to start.
 *
 * The relay is a file under kiln's git folder (git runs it by path, without
 * a shell); without perl, git connects itself as before.
 */
import { access, constants, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const PERL = '/usr/bin/perl';

const RELAY = `#!${PERL}
# kiln: a git:// connection with TCP_NODELAY (src/source/git/tcp-proxy.ts).
use strict;
use warnings;
use Socket qw(getaddrinfo SOCK_STREAM IPPROTO_TCP TCP_NODELAY SHUT_WR);
my ($host, $port) = @ARGV;
my ($err, @addresses) = getaddrinfo($host, $port, { socktype => SOCK_STREAM });
die "unable to look up $host: $err\\n" if $err;
my ($socket, $why);
for my $address (@addresses) {
  socket(my $candidate, $address->{family}, $address->{socktype}, $address->{protocol}) or next;
  if (connect($candidate, $address->{addr})) { $socket = $candidate; last }
  $why = "$!";
}
die "unable to connect to $host port $port: " . ($why // 'no address') . "\\n" unless $socket;
setsockopt($socket, IPPROTO_TCP, TCP_NODELAY, 1);
binmode STDIN; binmode STDOUT; binmode $socket;
my $git = getppid();
# A git killed while the server is silent leaves nobody to end the relay: the
# read from the server waits with a timeout, and a relay whose git is gone exits.
sub copy { my ($from, $to, $watch) = @_; my $buffer;
  while (1) {
    if ($watch) {
      vec(my $wanted = '', fileno($from), 1) = 1;
      if (select(my $ready = $wanted, undef, undef, 1) <= 0) { exit 0 if getppid() != $git; next }
    }
    my $n = sysread($from, $buffer, 65536);
    return unless $n;
    for (my $at = 0; $at < $n; ) { my $w = syswrite($to, $buffer, $n - $at, $at); return unless defined $w; $at += $w }
  }
}
my $pid = fork() // die "fork: $!\\n";
if ($pid == 0) { copy(\\*STDIN, $socket); shutdown($socket, SHUT_WR); exit 0 }
copy($socket, \\*STDOUT, 1);
kill 'TERM', $pid;
waitpid($pid, 0);
exit 0;
`;

/**
 * The environment that makes git relay git:// connections through the
 * relay, written under `gitDir` first if it is not there as it should be
 * (checked on every call: `kiln prune` may have emptied the folder). Empty
 * when perl cannot run it.
 */
export async function tcpNodelayEnv(gitDir: string): Promise<Readonly<Record<string, string>>> {
  const path = await writeRelay(gitDir);
  return path === undefined ? {} : { GIT_PROXY_COMMAND: path };
}

async function writeRelay(gitDir: string): Promise<string | undefined> {
  try {
    await access(PERL, constants.X_OK);
  } catch {
    return undefined;
  }
  const path = join(gitDir, 'tcp-nodelay-relay');
  if ((await readFile(path, 'utf8').catch(() => undefined)) === RELAY) return path;
  await mkdir(gitDir, { recursive: true });
  // Whole or not at all: another kiln may run it meanwhile.
  const temp = `${path}.${process.pid}.tmp`;
  await writeFile(temp, RELAY, { mode: 0o755 });
  await rename(temp, path);
  return path;
}
