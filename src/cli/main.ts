/**
 * kiln's command line. The only place that prints and picks exit codes:
 * 0 success, 1 build failed, 2 invalid definition or usage, 130/143/129
 * when interrupted by SIGINT/SIGTERM/SIGHUP. This is the entry point (bin/kiln.js runs
 * it); nothing imports it: what the commands share is in global-options.ts.
 */
import { Command, CommanderError, Option } from 'commander';
import { asKilnError, assertNever, ERROR_CODES, ExecError, KilnError, MissingGrantError, ValidationError } from '../errors.js';
import { LOG_LEVELS } from '../log.js';
import { ENTITLEMENTS, type Entitlement } from '../client/solve.js';
import { NETWORK_PROVIDER_CHOICES } from '../network/types.js';
import type { SnapshotterChoice } from '../client/session.js';
import { type BindingKind, UnboundSourceError } from '../source/types.js';
import { PROGRESS_MODES } from '../progress/select.js';
import { buildCommand } from './build.js';
import { llbConvertCommand } from './llb-convert.js';
import { DEFINITION_FORMATS } from '../llb/formats.js';
import { duCommand, pruneCommand } from './du-prune.js';
import { imagesCommand, imagesRmCommand } from './images.js';
import { workersCommand } from './workers.js';
import { HISTORY_FORMATS, historyInspectCommand, historyLogsCommand, historyLsCommand, RecordedFailure } from './history.js';
import { debugCommand } from './debug.js';
import { type GlobalOptions, isDebug } from './global-options.js';

function addGlobalOptions(cmd: Command): Command {
  return cmd
    .option('--root <dir>', "kiln's state directory (default /var/lib/kiln as root, else $XDG_DATA_HOME/kiln)")
    .addOption(new Option('--log-level <level>', 'diagnostic log level (env KILN_LOG; default warn)').choices(LOG_LEVELS))
    .option('--log-file <file>', 'write diagnostic logs to FILE instead of stderr')
    .option('--containerd-address <socket>', "containerd's socket for the containerd worker (env KILN_CONTAINERD_ADDRESS)")
    .option('--containerd-namespace <ns>', 'containerd namespace for kiln\'s containers (default kiln)')
    .addOption(
      new Option('--network-provider <provider>', "sandboxed exec ops' network: cni (own namespace on a bridge, NAT), host, none (loopback); auto: cni where usable, else none (env KILN_NETWORK_PROVIDER)").choices(
        NETWORK_PROVIDER_CHOICES,
      ),
    )
    .option('--network-cidr <cidr>', "the default CNI network's IPv4 subnet (env KILN_NETWORK_CIDR; default a free /16 such as 10.213.0.0/16)")
    .option('--cni-config <file>', 'a CNI config list to use instead of the default bridge network (env KILN_CNI_CONFIG)')
    .option('--cni-bin-dir <dir>', 'where CNI plugins are (repeatable; env KILN_CNI_BIN_DIR; default /usr/lib/cni, /opt/cni/bin)', collect, [])
    .option('--resolv-conf <file>', "the resolv.conf sandboxed containers' DNS is made from (env KILN_RESOLV_CONF; default /etc/resolv.conf)")
    .option('--config <file>', 'kiln.toml to read (default $XDG_CONFIG_HOME/kiln/kiln.toml, else /etc/kiln/kiln.toml)')
    .option('--debug', 'print stack traces with errors');
}

function program(): Command {
  const root = new Command('kiln')
    .description('A BuildKit-style build engine: JSON LLB in, filesystems out, never the same work twice.')
    .version(process.env['npm_package_version'] ?? '0.1.0', '--version')
    .showHelpAfterError(false)
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s), outputError: () => {} });

  addGlobalOptions(
    root
      .command('build')
      .description('Solve a JSON LLB definition and write its result to the outputs')
      .argument('<file>', 'the JSON LLB file, or - to read it from stdin')
      .option('--local <name=dir>', 'bind a local://NAME source to a directory (repeatable)', collect, [])
      .option(
        '-o, --output <spec>',
        'type=local,dest=DIR | type=tar,dest=FILE|- | type=oci,dest=FILE|-[,name=REF] | type=docker,dest=FILE|-,name=REF | type=image,name=REF[,push=true][,registry.insecure=true]; REF may be several, comma-separated, quoted as CSV ("name=a:1,a:latest"); image outputs also take compression=gzip|uncompressed, compression-level=N, oci-mediatypes=true|false, rewrite-timestamp=true|false (repeatable)',
        collect,
        [],
      )
      .option('--oci-layout <name=dir>', 'bind an oci-layout://NAME source to an OCI image layout directory (repeatable)', collect, [])
      .option('--insecure-registry <host>', 'talk to registry HOST[:PORT] over plain HTTP (repeatable)', collect, [])
      .addOption(new Option('--progress <mode>', 'progress output on stderr (auto: tty on a terminal, else plain)').choices(PROGRESS_MODES).default('auto'))
      .option('--parallelism <n>', 'max ops running at once (default: one per 256 MiB of memory, and ops other than exec at most one per CPU)')
      .addOption(new Option('--snapshotter <name>', 'snapshotter (auto picks overlayfs where it works)').choices(SNAPSHOTTERS).default('auto'))
      .option('--worker <id>', 'run on this worker instead of the default')
      .addOption(new Option('--allow <entitlement>', 'allow exec ops host networking or insecure mode (repeatable)').choices(ENTITLEMENTS).argParser(collectChoice).default([]))
      .option('--secret <spec>', 'id=ID,src=FILE or id=ID,env=VAR: a secret for secret mounts and secretEnv (repeatable)', collect, [])
      .option('--ssh <spec>', 'ID[=SOCKET[,raw=true|false]|KEYFILE[,KEYFILE...]]: an SSH agent (or, with raw=true, any socket) for ssh mounts; ID alone uses $SSH_AUTH_SOCK (repeatable)', collect, [])
      .option('--no-cache', 'rerun every op; the new results replace the cached ones')
      .option('--no-cache-filter <ops>', 'rerun the ops named (comma-separated op names of the definition) and every op built on them (repeatable)', collect, [])
      .option('--explain', 'at the end, list every step that ran rather than came from the cache, and why')
      .addOption(new Option('--format <form>', 'read the definition as JSON LLB, a binary pb.Definition or dump-llb JSON lines (default: told from the content)').choices(DEFINITION_FORMATS))
      .option('--image-config <file>', 'an OCI image config JSON for image outputs (what a frontend returns as containerimage.config)')
      .option('--history-keep-duration <duration>', 'keep build history this long (env KILN_HISTORY_KEEP_DURATION; kiln.toml [history] keep-duration; default 48h)')
      .option('--history-keep-builds <n>', 'keep at most this many builds in the history, 0 for none (env KILN_HISTORY_KEEP_BUILDS; kiln.toml [history] keep-builds; default 50)')
      .option('-i, --interactive', 'when a process fails, open a shell in its step (as the process left it) on this terminal; the build fails when the shell exits')
      .option('--shell <cmd>', 'the command -i opens (default /bin/sh; split at spaces)')
      .option('--export-cache <spec>', 'type=registry,ref=REF | type=local,dest=DIR[,tag=TAG]; with mode=min|max, compression=gzip|uncompressed, ignore-error=true, cache-mounts=ID;ID|all, registry.insecure=true (repeatable)', collect, [])
      .option('--import-cache <spec>', 'type=registry,ref=REF[,registry.insecure=true] | type=local,src=DIR[,tag=TAG], ignore-error=false to fail on an unusable cache: asked in order for ops and cache mounts the root lacks (repeatable)', collect, [])
      .option('--metadata-file <file>', "write the exporters' results (image digest and descriptor, cache refs) as JSON to FILE"),
  ).action(buildCommand);

  const history = root.command('history').description('The builds this root remembers, with the full output of every step');
  addGlobalOptions(
    history
      .command('ls')
      .description('List the builds kept, newest first')
      .addOption(new Option('--format <form>', 'table or json').choices(HISTORY_FORMATS).default('table')),
  ).action(historyLsCommand);
  addGlobalOptions(
    history
      .command('inspect')
      .description("Show a build: its vertices with their times and cache hits, and the error")
      .argument('<id>', 'the build id (or the start of it), as kiln history ls shows')
      .addOption(new Option('--format <form>', 'table or json').choices(HISTORY_FORMATS).default('table')),
  ).action(historyInspectCommand);
  addGlobalOptions(
    history
      .command('logs')
      .description("Print the full output of a build's steps (the most recent build without ID)")
      .argument('[id]', 'the build id (or the start of it)')
      .option('--vertex <name>', 'only this step (its name, or its digest)')
      .option('-f, --follow', 'keep printing while the build runs (from another terminal); ends when it ends'),
  ).action(historyLogsCommand);
  addGlobalOptions(
    root
      .command('debug')
      .description("Open a shell on the result of a recorded build's step (the latest build without ID), on this terminal")
      .argument('[id]', 'the build id (or the start of it), as kiln history ls shows')
      .option('--vertex <name>', 'the step whose result to open (its name, or its digest)')
      .option('--shell <cmd>', 'the command to open (default /bin/sh; split at spaces)')
      .option('--worker <id>', 'the worker whose executor runs the shell'),
  ).action(debugCommand);

  const llb = root.command('llb').description('Work with definitions without building them');
  llb
    .command('convert')
    .description('Convert a definition between JSON LLB, a binary pb.Definition and dump-llb JSON lines')
    .argument('<file>', 'the definition, or - to read it from stdin')
    .addOption(new Option('--to <form>', 'the form to write').choices(DEFINITION_FORMATS).makeOptionMandatory())
    .addOption(new Option('--format <form>', 'the form to read (default: told from the content)').choices(DEFINITION_FORMATS))
    .option('--out <file>', 'write here instead of stdout')
    .action(llbConvertCommand);

  addGlobalOptions(root.command('du').description('List cache records, content blobs and kept images, with their sizes').option('-v, --verbose', 'one block per record')).action(duCommand);

  addGlobalOptions(
    root
      .command('prune')
      .description('Remove unused cache records, and the blobs and index entries nothing left uses (never anything in use)')
      .option('--all', 'remove every unused record, not only those the filters select')
      .option('--keep-storage <bytes>', 'keep the most recently used records up to this size (e.g. 10GB)')
      .option('--keep-duration <duration>', 'keep records used within this duration (e.g. 48h)'),
  ).action(pruneCommand);

  const images = addGlobalOptions(root.command('images').description('List the images type=image outputs keep (name, digest, size, created)')).action(imagesCommand);
  // `kiln images rm NAME --root DIR`: commander gives the flags to `images`, which defines them; read them from there.
  images
    .command('rm')
    .description("Forget kept images; their blobs go at the next prune unless something else uses them (takes kiln images' flags)")
    .argument('<name...>', 'image names, as given to type=image,name=...')
    .action((names: string[], _options: unknown, command: Command) => imagesRmCommand(names, command.optsWithGlobals<GlobalOptions>()));

  addGlobalOptions(
    root
      .command('workers')
      .description('List workers and whether they are available')
      .addOption(new Option('--snapshotter <name>', 'snapshotter the workers use, as for build (auto picks overlayfs where it works)').choices(SNAPSHOTTERS).default('auto')),
  ).action(workersCommand);
  return root;
}

/** The `--snapshotter` choices of build and workers. */
const SNAPSHOTTERS: readonly SnapshotterChoice[] = ['auto', 'overlayfs', 'native'];

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function collectChoice(this: Option, value: string, previous: string[] | undefined): string[] {
  if (!ENTITLEMENTS.includes(value as Entitlement)) {
    throw new KilnError(ERROR_CODES.USAGE, `--allow "${value}": expected one of ${ENTITLEMENTS.join(', ')}`);
  }
  return [...(previous ?? []), value];
}

/** Exit code for an error that ended a command. */
function exitCodeOf(err: KilnError): number {
  switch (err.code) {
    case ERROR_CODES.INVALID_DEFINITION:
    case ERROR_CODES.DEFINITION_READ:
    case ERROR_CODES.USAGE:
    case ERROR_CODES.CONFIG:
      return 2;
    case ERROR_CODES.CANCELLED:
      // The signal's code (128 + its number) when a signal cancelled it, set by the command.
      return typeof process.exitCode === 'number' && process.exitCode > 128 ? process.exitCode : 130;
    default:
      return 1;
  }
}

/** One clear line per problem; the stack only with --debug. */
export function renderError(err: unknown): number {
  if (err instanceof CommanderError) {
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0;
    process.stderr.write(`kiln: ${err.message.replace(/^error: /, '')}\n`);
    return 2;
  }
  if (err instanceof RecordedFailure) {
    const code = renderError(err.error);
    process.stderr.write(`see the full log: ${err.command}\n`);
    return code;
  }
  const e = asKilnError(err);
  // Say which op failed unless the message already does.
  const where = e.op !== undefined && !e.message.includes(`"${e.op}"`) ? `op "${e.op}": ` : '';
  process.stderr.write(`error: ${where}${e.message}${advice(e)}\n`);
  if (e instanceof ExecError && e.tail.length > 0) {
    process.stderr.write(`  last lines of output:\n${e.tail.map((l) => `  > ${l}\n`).join('')}`);
  }
  if (e instanceof ValidationError) {
    for (const d of e.diagnostics.slice(1)) process.stderr.write(`  - ${d.path === '' ? '' : `${d.path}: `}${d.message}\n`);
  }
  if (isDebug()) {
    process.stderr.write(`[${e.code}]${e.op === undefined ? '' : ` op=${e.op}`}${e.field === undefined ? '' : ` field=${e.field}`}\n`);
    process.stderr.write(`${(err instanceof Error ? err.stack : undefined) ?? String(err)}\n`);
    if (err instanceof Error && err.cause instanceof Error) process.stderr.write(`caused by: ${err.cause.stack ?? err.cause.message}\n`);
  }
  return exitCodeOf(e);
}

/** The flag that fills each table of source bindings. */
const BINDING_FLAGS: Readonly<Record<BindingKind, string>> = { locals: '--local', ociLayouts: '--oci-layout' };

/** What to pass to fix an error, when a flag fixes it (the library says what is wrong, the CLI which flag to use). */
function advice(e: KilnError): string {
  if (e instanceof UnboundSourceError) return `: pass ${BINDING_FLAGS[e.bindings]} ${e.binding}=DIR`;
  if (e instanceof MissingGrantError) {
    const { grant } = e;
    switch (grant.kind) {
      case 'secret':
        return `: pass --secret id=${grant.id},src=FILE or --secret id=${grant.id},env=VAR (or mark it optional)`;
      case 'ssh':
        return `: pass --ssh ${grant.id}=$SSH_AUTH_SOCK (or --ssh ${grant.id}=KEYFILE)${grant.for === 'mount' ? ', or mark the mount optional' : ''}`;
      case 'entitlement':
        return `: pass --allow ${grant.entitlement} if you trust this definition`;
      default:
        return assertNever(grant, 'grant');
    }
  }
  return '';
}

/** Runs the command line; a function, not top-level await, so the bundled CommonJS build (scripts/bundle.mjs) can hold it. */
async function main(): Promise<void> {
  try {
    await program().parseAsync(process.argv);
  } catch (err) {
    process.exitCode = renderError(err);
  }
}

void main();
