/**
 * A resident spawner: one small perl process, started by the first child
 * kiln runs through it (early in a build's first step that runs), that forks
 * and execs the commands kiln runs on hot paths (runc, the CNI plugins,
 * unshare, umount) and reports their ends.
 *
 * Why: node's spawn forks the whole node process, and on a paravirtualized
 * guest copying its page tables costs tens of milliseconds of main-thread
 * time per child (8–50 ms at 70 MB of RSS, more as the heap grows), during
 * which nothing else in kiln runs; 16 parallel stages start ~80 children,
 * one after another. perl's fork of its few megabytes costs ~1–2 ms. (perl is
 * essential on Debian, perl-base, and kiln already needs it for the sealed
 * runc; the script uses no module but strict.)
 *
 * Protocol. kiln writes frames `LEN\n` + LEN bytes of NUL-separated fields:
 * `S id file argv0 cwd stdin stdout stderr nenv env... args...` (a stdio
 * field is 1 for a pipe, 0 for /dev/null), `K id signo`, `C id`. perl answers
 * lines: `S id pid fd0 fd1 fd2` (its own ends of the pipes, -1 for none),
 * `F id message` (could not start), `E id code signo`. kiln opens perl's
 * pipe ends through /proc/PID/fd (which opens the same pipe) and then sends
 * `C id` so perl closes its copies: end of file on the child's output then
 * means what it means for node's own spawn.
 *
 * perl ignores the signals a terminal or a supervisor sends the whole
 * process group (kiln decides what to do about them and may still need to
 * run `runc delete`), resets them in every child, and exits when its stdin
 * closes, which is when kiln exits however it ends. A spawner that died is
 * replaced on the next spawn; where perl cannot be started at all (or with
 * KILN_SPAWNER=0), `spawnChild` uses node's spawn: same streams, same events.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { constants as fsConstants, openSync } from 'node:fs';
import net from 'node:net';
import { constants as osConstants } from 'node:os';
import { PassThrough, type Readable, type Writable } from 'node:stream';

// No module but strict (POSIX alone took ~4.7 of perl's ~5.7 ms start, which
// the first container of a build waits for): WNOHANG is 1 on Linux, the
// standard handles reopened as duplicates keep their fd numbers (perl dup2s
// them), and a child whose exec failed leaves by exit, with nothing buffered.
const SCRIPT = `
use strict;
$| = 1;
$SIG{$_} = 'IGNORE' for qw(INT TERM HUP QUIT);
pipe(my $wake_r, my $wake_w) or die "pipe: $!\\n";
{ my $f = fcntl($wake_w, 3, 0); fcntl($wake_w, 4, $f | 2048); }
$SIG{CHLD} = sub { syswrite($wake_w, "x") };
my (%kids, %pids, %held);
my $buf = '';
for (;;) {
  my $rin = '';
  vec($rin, 0, 1) = 1;
  vec($rin, fileno($wake_r), 1) = 1;
  my $n = select(my $rout = $rin, undef, undef, undef);
  if ($n > 0 && vec($rout, fileno($wake_r), 1)) { sysread($wake_r, my $junk, 4096); }
  reap();
  next unless $n > 0 && vec($rout, 0, 1);
  my $r = sysread(STDIN, $buf, 65536, length $buf);
  next if !defined $r && $!{EINTR};
  exit 0 unless $r;
  while ($buf =~ /^(\\d+)\\n/) {
    my $head = length($1) + 1;
    my $len = $1;
    last if length($buf) < $head + $len;
    my $msg = substr($buf, $head, $len);
    substr($buf, 0, $head + $len) = '';
    handle(split(/\\0/, $msg, -1));
  }
}
sub reap {
  while ((my $pid = waitpid(-1, 1)) > 0) {
    my $id = delete $kids{$pid};
    next unless defined $id;
    delete $pids{$id};
    my $st = $?;
    print "E $id ", (($st & 127) ? -1 : ($st >> 8)), " ", ($st & 127), "\\n";
  }
}
sub handle {
  my ($op, $id, @rest) = @_;
  if ($op eq 'K') { kill($rest[0] + 0, $pids{$id}) if defined $pids{$id}; }
  elsif ($op eq 'C') { delete $held{$id}; }
  elsif ($op eq 'S') { start($id, @rest); }
}
sub start {
  my ($id, $file, $argv0, $cwd, @modes) = @_;
  my @rest = splice(@modes, 3);
  my $nenv = shift @rest;
  my @env = splice(@rest, 0, $nenv);
  my (@child, @mine);
  for my $fd (0 .. 2) {
    next unless $modes[$fd];
    my ($r, $w);
    pipe($r, $w) or return print "F $id pipe: $!\\n";
    ($child[$fd], $mine[$fd]) = $fd == 0 ? ($r, $w) : ($w, $r);
  }
  pipe(my $err_r, my $err_w) or return print "F $id pipe: $!\\n";
  my $pid = fork();
  return print "F $id fork: $!\\n" unless defined $pid;
  if ($pid == 0) {
    close $err_r;
    $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP QUIT CHLD PIPE);
    my @std = (\*STDIN, \*STDOUT, \*STDERR);
    for my $fd (0 .. 2) {
      my $h = $child[$fd];
      if (!defined $h) { open($h, $fd == 0 ? '<' : '>', '/dev/null') or fail($err_w, "/dev/null"); }
      open($std[$fd], $fd == 0 ? '<&' : '>&', $h) or fail($err_w, "dup2");
    }
    if ($cwd ne '') { chdir($cwd) or fail($err_w, "chdir $cwd"); }
    %ENV = ();
    for (@env) { my ($k, $v) = split(/=/, $_, 2); $ENV{$k} = $v; }
    exec { $file } $argv0, @rest;
    fail($err_w, "exec $file");
  }
  close $err_w;
  @child = ();
  my $said = '';
  for (;;) {
    my $r = sysread($err_r, $said, 512, length $said);
    next if !defined $r && $!{EINTR};
    last unless $r;
  }
  close $err_r;
  if ($said ne '') {
    waitpid($pid, 0);
    $said =~ s/\\n/ /g;
    return print "F $id $said\\n";
  }
  $kids{$pid} = $id;
  $pids{$id} = $pid;
  $held{$id} = [@mine];
  print "S $id $pid ", join(' ', map { defined $mine[$_] ? fileno($mine[$_]) : -1 } 0 .. 2), "\\n";
}
sub fail {
  my ($w, $what) = @_;
  syswrite($w, "$what: $!");
  exit 127;
}
`;

/** What to run, as node's spawn takes it. */
export interface SpawnRequest {
  readonly file: string;
  readonly args: readonly string[];
  /** argv[0]; default `file`. */
  readonly argv0?: string;
  readonly cwd?: string;
  /** The whole environment; default this process's. */
  readonly env?: NodeJS.ProcessEnv;
  readonly stdin: 'ignore' | 'pipe';
  readonly stdout: 'ignore' | 'pipe';
  readonly stderr: 'ignore' | 'pipe';
  /** Kills the child (SIGTERM) when aborted. */
  readonly signal?: AbortSignal;
  /**
   * The child may well be the only one this process starts (the tree
   * listing of a build whose steps all come from the cache): unless the
   * spawner already runs, node's own spawn starts it and no spawner is
   * started for it. Starting perl costs the same fork of this process, and
   * then perl's own start (~7 ms) before the child even begins.
   */
  readonly lone?: boolean;
}

/**
 * The part of node's ChildProcess kiln uses: the piped streams, `kill`,
 * 'error' (could not start; 'close' follows with code null) and 'close'
 * (exited and its output all read) with node's arguments.
 */
export interface Child extends EventEmitter {
  /** Known once it has started. */
  readonly pid?: number | undefined;
  readonly stdin: Writable | null;
  readonly stdout: Readable | null;
  readonly stderr: Readable | null;
  kill(signal: NodeJS.Signals): void;
}

/** One child run by the spawner. */
class SpawnedChild extends EventEmitter implements Child {
  readonly stdin: PassThrough | null;
  readonly stdout: PassThrough | null;
  readonly stderr: PassThrough | null;
  pid: number | undefined;
  /** A signal asked for before perl reported the pid. */
  pendingSignal: number | undefined;
  readonly #kill: (child: SpawnedChild, signo: number) => void;
  #exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  #openStreams = 0;
  #closed = false;

  constructor(request: SpawnRequest, kill: (child: SpawnedChild, signo: number) => void) {
    super();
    this.stdin = request.stdin === 'pipe' ? new PassThrough() : null;
    this.stdout = request.stdout === 'pipe' ? new PassThrough() : null;
    this.stderr = request.stderr === 'pipe' ? new PassThrough() : null;
    this.#kill = kill;
  }

  kill(signal: NodeJS.Signals): void {
    this.#kill(this, osConstants.signals[signal]);
  }

  /** perl's ends of the pipes, opened by this process: the streams start flowing. */
  attach(fds: readonly number[], spawnerPid: number): void {
    const [stdinFd, stdoutFd, stderrFd] = fds;
    const open = (fd: number | undefined, flags: number): number | undefined => {
      if (fd === undefined || fd < 0) return undefined;
      try {
        return openSync(`/proc/${spawnerPid}/fd/${fd}`, flags | fsConstants.O_NONBLOCK);
      } catch {
        // ENXIO for stdin: the child has already closed it (exited).
        return undefined;
      }
    };
    for (const [fd, stream] of [
      [stdoutFd, this.stdout],
      [stderrFd, this.stderr],
    ] as const) {
      if (stream === null) continue;
      const opened = open(fd, fsConstants.O_RDONLY);
      if (opened === undefined) {
        stream.end();
        continue;
      }
      this.#openStreams++;
      const socket = new net.Socket({ fd: opened, readable: true, writable: false });
      socket.pipe(stream);
      socket.once('close', () => this.#streamClosed());
      // A reader that stops early (destroys the stream) closes the pipe, as it
      // would with node's own child: the child then gets SIGPIPE rather than
      // blocking on a full pipe nobody reads.
      stream.once('close', () => socket.destroy());
    }
    if (this.stdin !== null) {
      const opened = open(stdinFd, fsConstants.O_WRONLY);
      if (opened === undefined) {
        this.stdin.resume();
      } else {
        const socket = new net.Socket({ fd: opened, readable: false, writable: true });
        socket.on('error', (err) => this.stdin?.emit('error', err));
        this.stdin.pipe(socket);
      }
    }
  }

  exited(code: number | null, signal: NodeJS.Signals | null): void {
    this.#exit = { code, signal };
    this.emit('exit', code, signal);
    this.#maybeClose();
  }

  /** Could not start, or its end cannot be learned (`attached`: its output still flows, and ends by itself). */
  failed(err: Error, attached = false): void {
    if (!attached) {
      this.stdout?.end();
      this.stderr?.end();
    }
    this.emit('error', err);
    this.#exit = { code: null, signal: null };
    this.#maybeClose();
  }

  #streamClosed(): void {
    this.#openStreams--;
    this.#maybeClose();
  }

  #maybeClose(): void {
    if (this.#closed || this.#exit === undefined || this.#openStreams > 0) return;
    this.#closed = true;
    const { code, signal } = this.#exit;
    // After the PassThroughs have handed on what they hold, as node's 'close' comes after the streams'.
    setImmediate(() => this.emit('close', code, signal));
  }
}

/** The perl process and the children it runs for this one. */
class Spawner {
  readonly #perl: ChildProcess;
  readonly #pid: number;
  /** Sent, not yet answered with S or F: sent again through node's spawn if perl dies. */
  readonly #starting = new Map<number, { child: SpawnedChild; request: SpawnRequest }>();
  readonly #running = new Map<number, SpawnedChild>();
  #nextId = 1;
  #alive = true;
  #pending = '';

  constructor(perl: ChildProcess, pid: number) {
    this.#perl = perl;
    this.#pid = pid;
    perl.stdout?.setEncoding('utf8').on('data', (chunk: string) => this.#read(chunk));
    perl.stdin?.on('error', () => this.#died());
    perl.once('exit', () => this.#died());
    perl.once('error', () => this.#died());
    this.#idle();
  }

  get alive(): boolean {
    return this.#alive;
  }

  get pid(): number {
    return this.#pid;
  }

  spawn(request: SpawnRequest): Child {
    const child = new SpawnedChild(request, (c, signo) => this.#signal(c, signo));
    const id = this.#nextId++;
    const env = Object.entries(request.env ?? process.env).flatMap(([k, v]) => (v === undefined ? [] : [`${k}=${v}`]));
    const fields = [
      'S',
      String(id),
      request.file,
      request.argv0 ?? request.file,
      request.cwd ?? '',
      request.stdin === 'pipe' ? '1' : '0',
      request.stdout === 'pipe' ? '1' : '0',
      request.stderr === 'pipe' ? '1' : '0',
      String(env.length),
      ...env,
      ...request.args,
    ];
    this.#starting.set(id, { child, request });
    this.#busy();
    this.#send(fields);
    if (request.signal !== undefined) {
      const { signal } = request;
      const onAbort = (): void => child.kill('SIGTERM');
      if (signal.aborted) onAbort();
      else {
        signal.addEventListener('abort', onAbort, { once: true });
        child.once('close', () => signal.removeEventListener('abort', onAbort));
      }
    }
    return child;
  }

  #send(fields: readonly string[]): void {
    const body = Buffer.from(fields.join('\0'));
    this.#perl.stdin?.write(Buffer.concat([Buffer.from(`${body.length}\n`), body]));
  }

  #signal(child: SpawnedChild, signo: number): void {
    if (child.pid === undefined) {
      child.pendingSignal = signo;
      return;
    }
    if (this.#alive) {
      const id = [...this.#running].find(([, c]) => c === child)?.[0];
      if (id !== undefined) this.#send(['K', String(id), String(signo)]);
      return;
    }
    try {
      process.kill(child.pid, signo);
    } catch {
      // Already gone.
    }
  }

  #read(chunk: string): void {
    this.#pending += chunk;
    let newline: number;
    while ((newline = this.#pending.indexOf('\n')) >= 0) {
      const line = this.#pending.slice(0, newline);
      this.#pending = this.#pending.slice(newline + 1);
      this.#answer(line);
    }
  }

  #answer(line: string): void {
    const [kind, idText, ...rest] = line.split(' ');
    const id = Number(idText);
    if (kind === 'S') {
      const started = this.#starting.get(id);
      if (started === undefined) return;
      this.#starting.delete(id);
      const { child } = started;
      child.pid = Number(rest[0]);
      this.#running.set(id, child);
      child.attach(rest.slice(1).map(Number), this.#pid);
      this.#send(['C', String(id)]);
      child.emit('spawn');
      if (child.pendingSignal !== undefined) this.#send(['K', String(id), String(child.pendingSignal)]);
    } else if (kind === 'F') {
      const started = this.#starting.get(id);
      this.#starting.delete(id);
      started?.child.failed(Object.assign(new Error(rest.join(' ')), { code: 'ENOENT' }));
    } else if (kind === 'E') {
      const child = this.#running.get(id);
      this.#running.delete(id);
      const signo = Number(rest[1]);
      child?.exited(signo === 0 ? Number(rest[0]) : null, signo === 0 ? null : signalName(signo));
    }
    this.#idle();
  }

  /** While children run, the answers about them keep this process alive, as node's own children would. */
  #busy(): void {
    this.#perl.ref();
    (this.#perl.stdout as net.Socket | null)?.ref();
  }

  /** With none, the spawner must not keep kiln from exiting (it ends with kiln's end of its stdin). */
  #idle(): void {
    if (this.#starting.size > 0 || this.#running.size > 0) return;
    this.#perl.unref();
    (this.#perl.stdout as net.Socket | null)?.unref();
    (this.#perl.stdin as net.Socket | null)?.unref();
  }

  #died(): void {
    if (!this.#alive) return;
    this.#alive = false;
    if (current === this) current = undefined;
    // Not started yet: node's spawn runs them instead.
    for (const { child, request } of this.#starting.values()) forward(fallbackSpawn(request), child);
    this.#starting.clear();
    // Started: their ends can no longer be learned.
    for (const child of this.#running.values()) child.failed(new Error('the spawner exited while the process ran'), true);
    this.#running.clear();
  }
}

function signalName(signo: number): NodeJS.Signals | null {
  const entry = Object.entries(osConstants.signals).find(([, n]) => n === signo);
  return entry === undefined ? null : (entry[0] as NodeJS.Signals);
}

let current: Spawner | undefined;
/** Set once starting it has failed, or with KILN_SPAWNER=0: node's spawn from then on. */
let disabled = process.env['KILN_SPAWNER'] === '0';

/**
 * Starts the spawner if it is not running (this spawn is the last one node
 * pays for). The first spawnChild of a child that is not lone starts it too.
 */
export function startSpawner(): void {
  if (current !== undefined || disabled) return;
  let perl: ChildProcess;
  try {
    perl = spawn('perl', ['-e', SCRIPT], { stdio: ['pipe', 'pipe', 'ignore'] });
  } catch {
    disabled = true;
    return;
  }
  if (perl.pid === undefined) {
    // No perl: the 'error' event follows; nothing is sent to it.
    perl.once('error', () => {});
    disabled = true;
    return;
  }
  current = new Spawner(perl, perl.pid);
}

/** The spawner's pid, if it runs (for tests). */
export function spawnerPid(): number | undefined {
  return current?.alive === true ? current.pid : undefined;
}

/** Runs `request` through the spawner, or through node's spawn where there is none (or for a lone child, see SpawnRequest). */
export function spawnChild(request: SpawnRequest): Child {
  if (request.lone === true && current?.alive !== true) return fallbackSpawn(request);
  startSpawner();
  return current?.alive === true ? current.spawn(request) : fallbackSpawn(request);
}

function fallbackSpawn(request: SpawnRequest): Child {
  return spawn(request.file, request.args, {
    ...(request.argv0 === undefined ? {} : { argv0: request.argv0 }),
    ...(request.cwd === undefined ? {} : { cwd: request.cwd }),
    ...(request.env === undefined ? {} : { env: request.env }),
    ...(request.signal === undefined ? {} : { signal: request.signal }),
    stdio: [request.stdin, request.stdout, request.stderr],
  });
}

/** Makes `to` (already handed out) behave as `from`, node's child that replaced it. */
function forward(from: Child, to: SpawnedChild): void {
  if (to.stdin !== null && from.stdin !== null) to.stdin.pipe(from.stdin);
  if (to.stdout !== null) from.stdout?.pipe(to.stdout);
  if (to.stderr !== null) from.stderr?.pipe(to.stderr);
  to.kill = (sig) => from.kill(sig);
  from.once('error', (err) => to.emit('error', err));
  from.once('close', (code: number | null, sig: NodeJS.Signals | null) => setImmediate(() => to.emit('close', code, sig)));
}
