/** The options every kiln command takes, and what they set up. */
import { loadConfig } from '../client/config.js';
import type { SessionNetworkOptions, SessionOptions } from '../client/session.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import { isLogLevel, LOG_LEVELS } from '../log.js';

/** Options every command takes. */
export interface GlobalOptions {
  readonly root?: string;
  readonly containerdAddress?: string;
  readonly containerdNamespace?: string;
  readonly logLevel?: string;
  readonly logFile?: string;
  readonly debug?: boolean;
  readonly networkProvider?: string;
  readonly networkCidr?: string;
  readonly cniConfig?: string;
  readonly cniBinDir?: readonly string[];
  readonly resolvConf?: string;
  /** `--config FILE`: kiln.toml to read instead of the default places. */
  readonly config?: string;
}

// Known before commander parses, so that an error in parsing itself can show its stack.
let debug = process.argv.includes('--debug');

/** Whether errors are printed with their stacks (`--debug`). */
export function isDebug(): boolean {
  return debug;
}

/** The Session options that come from the global flags (and the config file they name, or the default one). */
export function sessionOptions(options: GlobalOptions): SessionOptions {
  return {
    config: loadConfig(options.config === undefined ? {} : { file: options.config }),
    ...(options.root === undefined ? {} : { root: options.root }),
    ...(options.containerdAddress === undefined ? {} : { containerdAddress: options.containerdAddress }),
    ...(options.containerdNamespace === undefined ? {} : { containerdNamespace: options.containerdNamespace }),
    network: networkOptions(options),
  };
}

/** The network flags; what they leave unset comes from the environment (see SessionOptions.network). */
function networkOptions(options: GlobalOptions): SessionNetworkOptions {
  const choice = options.networkProvider as SessionNetworkOptions['choice'];
  return {
    ...(choice === undefined ? {} : { choice }),
    ...(options.networkCidr === undefined ? {} : { cidr: options.networkCidr }),
    ...(options.cniConfig === undefined ? {} : { cniConfig: options.cniConfig }),
    ...(options.cniBinDir === undefined || options.cniBinDir.length === 0 ? {} : { cniBinDirs: options.cniBinDir }),
    ...(options.resolvConf === undefined ? {} : { resolvConf: options.resolvConf }),
  };
}

/** Validates the global options shared by every command. */
export function checkGlobalOptions(options: GlobalOptions): void {
  debug ||= options.debug === true;
  if (options.root !== undefined && options.root.trim() === '') {
    throw new KilnError(ERROR_CODES.USAGE, '--root is empty: give the directory for kiln\'s state (default /var/lib/kiln)');
  }
  if (options.logLevel !== undefined && !isLogLevel(options.logLevel)) {
    throw new KilnError(ERROR_CODES.USAGE, `--log-level "${options.logLevel}": expected one of ${LOG_LEVELS.join(', ')}`);
  }
}
