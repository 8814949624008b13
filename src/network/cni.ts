/**
 * Running CNI plugins as the CNI specification (v1.0) defines it: the
 * plugin is a binary found in CNI_PATH, told what to do by environment
 * variables (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH),
 * given its network configuration on stdin, and answering with a result (or
 * an error object) as JSON on stdout. A configuration list runs its plugins
 * in order for ADD, each given the previous plugin's result as `prevResult`,
 * and in reverse order for DEL, each given the result ADD ended with.
 */
import { access, constants as fsConstants } from 'node:fs/promises';
import path from 'node:path';
import { exec } from '../command.js';
import { ERROR_CODES, KilnError } from '../errors.js';

/** One plugin's configuration in a list (`type` names the binary). */
export type PluginConfig = Readonly<Record<string, unknown>> & { readonly type: string };

/** A network configuration list (`*.conflist`). */
export interface NetworkConfigList {
  readonly cniVersion: string;
  readonly name: string;
  readonly plugins: readonly PluginConfig[];
}

/** The part of a plugin's result kiln reads; the rest is passed along as it came. */
export interface CniResult {
  readonly cniVersion?: string;
  readonly ips?: readonly { readonly address: string; readonly gateway?: string; readonly interface?: number }[];
  readonly [field: string]: unknown;
}

/** Which container and interface an invocation is about. */
export interface CniAttachment {
  /** Unique per attachment; host-local IPAM records its leases under it. */
  readonly containerId: string;
  /** The network namespace's path (a bind-mounted nsfs file). */
  readonly netns: string;
  readonly ifname: string;
}

/** Where plugins are looked for. */
export interface CniRuntime {
  readonly binDirs: readonly string[];
}

/** A plugin failed; the message carries the plugin's own `msg` and `details`. */
export class CniError extends KilnError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super(ERROR_CODES.NETWORK, message, options);
    this.name = 'CniError';
  }
}

/** Runs ADD through the list; returns the last plugin's result (what DEL later needs). */
export async function addNetworkList(runtime: CniRuntime, list: NetworkConfigList, attachment: CniAttachment): Promise<CniResult> {
  let previous: CniResult | undefined;
  for (const plugin of list.plugins) {
    previous = await invokePlugin(runtime, 'ADD', pluginInput(list, plugin, previous), attachment);
  }
  return previous ?? {};
}

/**
 * Runs DEL through the list in reverse. Every plugin is asked even when one
 * fails (each releases its own part: the lease, the veth, the rules); the
 * first failure is thrown after.
 */
export async function delNetworkList(runtime: CniRuntime, list: NetworkConfigList, attachment: CniAttachment, addResult: CniResult | undefined): Promise<void> {
  let first: unknown;
  for (const plugin of [...list.plugins].reverse()) {
    try {
      await invokePlugin(runtime, 'DEL', pluginInput(list, plugin, addResult), attachment);
    } catch (err) {
      first ??= err;
    }
  }
  if (first !== undefined) throw first;
}

/** Whether each plugin the list names is an executable in one of the bin dirs; the missing ones. */
export async function missingPlugins(runtime: CniRuntime, list: NetworkConfigList): Promise<string[]> {
  const missing: string[] = [];
  for (const plugin of list.plugins) {
    if ((await findPlugin(runtime, plugin.type)) === undefined) missing.push(plugin.type);
  }
  return missing;
}

function pluginInput(list: NetworkConfigList, plugin: PluginConfig, previous: CniResult | undefined): Record<string, unknown> {
  return { ...plugin, cniVersion: list.cniVersion, name: list.name, ...(previous === undefined ? {} : { prevResult: previous }) };
}

async function findPlugin(runtime: CniRuntime, type: string): Promise<string | undefined> {
  // A type is a bare file name: never a path that could leave the bin dirs.
  if (type === '' || type.includes('/') || type === '.' || type === '..') return undefined;
  for (const dir of runtime.binDirs) {
    const candidate = path.join(dir, type);
    try {
      await access(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // Not in this directory.
    }
  }
  return undefined;
}

async function invokePlugin(runtime: CniRuntime, command: 'ADD' | 'DEL', config: Record<string, unknown>, attachment: CniAttachment): Promise<CniResult> {
  const type = String(config['type']);
  const binary = await findPlugin(runtime, type);
  if (binary === undefined) {
    throw new CniError(`CNI plugin "${type}" was not found in ${runtime.binDirs.join(':')}: install containernetworking-plugins or pass --cni-bin-dir`);
  }
  const env = {
    PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: command,
    CNI_CONTAINERID: attachment.containerId,
    CNI_NETNS: attachment.netns,
    CNI_IFNAME: attachment.ifname,
    CNI_PATH: runtime.binDirs.join(':'),
  };
  const { code, stdout, stderr } = await exec({ file: binary, args: [], env, input: JSON.stringify(config) }, { stdout: true });
  if (code !== 0) {
    throw new CniError(`CNI plugin "${type}" failed on ${command} for ${attachment.containerId}: ${pluginFailure(stdout, stderr, code)}`);
  }
  if (command === 'DEL' || stdout.trim() === '') return {};
  try {
    return JSON.parse(stdout) as CniResult;
  } catch (err) {
    throw new CniError(`CNI plugin "${type}" answered ${command} with output that is not JSON: ${stdout.slice(0, 200)}`, { cause: err });
  }
}

/** The plugin's error object (`{code, msg, details}`) as one line, else its stderr. */
function pluginFailure(stdout: string, stderr: string, code: number | null): string {
  try {
    const parsed = JSON.parse(stdout) as { code?: number; msg?: string; details?: string };
    if (typeof parsed.msg === 'string') return [parsed.msg, parsed.details].filter((s) => s !== undefined && s !== '').join(': ');
  } catch {
    // Not the spec's error object.
  }
  const text = (stderr.trim() || stdout.trim()).split('\n').slice(-3).join(' ');
  return text === '' ? `exit code ${code ?? 'none'}` : text;
}
