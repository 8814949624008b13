/**
 * kiln's config file, kiln.toml: settings a user keeps between builds.
 * It holds `[registry."HOST"]` tables (mirrors, plain HTTP, TLS), as
 * buildkitd.toml does, `[network]` (the provider of sandboxed exec ops'
 * network, as buildkitd's `[worker.oci] networkMode`) and `[history]` (how
 * much build history is kept); each top-level table is one section of `KilnConfig`,
 * so a new section is a new field and a new case in `parseConfig`.
 *
 * The file is `--config FILE` when given (it must exist), else the first of
 * `$XDG_CONFIG_HOME/kiln/kiln.toml` (`~/.config/kiln/kiln.toml`) and
 * `/etc/kiln/kiln.toml` that exists; with none, every setting has its default.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parse, TomlError } from 'smol-toml';
import { durationMs } from '../duration.js';
import { canonicalHost, type RegistryHostConfig, type RegistryHosts } from '../content/registry/hosts.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import { NETWORK_PROVIDER_CHOICES, type NetworkProviderChoice } from '../network/types.js';

/** What kiln.toml holds, parsed and checked. */
export interface KilnConfig {
  /** The file it was read from; absent when no file was found. */
  readonly file?: string;
  /** `[registry."HOST"]`: settings per registry host (Docker Hub as `docker.io`). */
  readonly registry: RegistryHosts;
  /** `[network]`: the network of sandboxed exec ops; flags and environment variables win over it. */
  readonly network: NetworkConfig;
  /** `[history]`: how much build history is kept; flags and environment variables win over it. */
  readonly history: HistoryConfig;
}

/** `[history]` of kiln.toml: `keep-duration` (`48h`) and `keep-builds` (0: record no history). */
export interface HistoryConfig {
  readonly keepDurationMs?: number;
  readonly keepBuilds?: number;
}

/** `[network]` of kiln.toml: `provider`, `cidr`, `cni-config`, `cni-bin-dirs`, `resolv-conf`. */
export interface NetworkConfig {
  readonly choice?: NetworkProviderChoice;
  readonly cidr?: string;
  readonly cniConfig?: string;
  readonly cniBinDirs?: readonly string[];
  readonly resolvConf?: string;
}

/** The settings when there is no config file. */
export const DEFAULT_CONFIG: KilnConfig = { registry: {}, network: {}, history: {} };

/** Options of `loadConfig`. */
export interface LoadConfigOptions {
  /** `--config FILE`: read this file, which must exist. */
  readonly file?: string;
  /** The environment to take `XDG_CONFIG_HOME` from (default: this process's). */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

/** Where kiln looks for its config when no file is named, in order. */
export function defaultConfigPaths(env: Readonly<Record<string, string | undefined>> = process.env): string[] {
  const xdg = env['XDG_CONFIG_HOME'];
  const configHome = xdg !== undefined && xdg !== '' ? xdg : join(homedir(), '.config');
  return [join(configHome, 'kiln', 'kiln.toml'), '/etc/kiln/kiln.toml'];
}

/**
 * Reads and checks the config file. Synchronous: it is one small file read
 * once when a command starts, before anything else runs.
 */
export function loadConfig(options: LoadConfigOptions = {}): KilnConfig {
  if (options.file !== undefined) {
    const file = resolve(options.file);
    const text = readConfig(file, true);
    return parseConfig(text ?? '', file);
  }
  for (const file of defaultConfigPaths(options.env)) {
    const text = readConfig(file, false);
    if (text !== undefined) return parseConfig(text, file);
  }
  return DEFAULT_CONFIG;
}

/** The file's text; undefined when it does not exist and need not. */
function readConfig(file: string, required: boolean): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (!required && (code === 'ENOENT' || code === 'ENOTDIR')) return undefined;
    const why = code === 'ENOENT' ? 'no such file' : (err as Error).message;
    throw new KilnError(ERROR_CODES.CONFIG, `cannot read the config file ${file}: ${why}`, { cause: err });
  }
}

/** Parses kiln.toml's text; `file` names it in errors and anchors relative paths (`ca`). */
export function parseConfig(text: string, file: string): KilnConfig {
  let doc: Record<string, unknown>;
  try {
    doc = parse(text);
  } catch (err) {
    const where = err instanceof TomlError ? ` (line ${err.line}, column ${err.column})` : '';
    const said = ((err as Error).message.split('\n')[0] ?? '').replace(/^Invalid TOML document: /, '');
    throw new KilnError(ERROR_CODES.CONFIG, `${file} is not valid TOML: ${said}${where}`, { cause: err });
  }
  const fail = (key: string, message: string): KilnError => new KilnError(ERROR_CODES.CONFIG, `${file}: ${key}: ${message}`, { field: key });
  let registry: RegistryHosts = {};
  let network: NetworkConfig = {};
  let history: HistoryConfig = {};
  for (const [section, value] of Object.entries(doc)) {
    switch (section) {
      case 'registry':
        registry = parseRegistries(value, dirname(file), fail);
        break;
      case 'network':
        network = parseNetwork(value, dirname(file), fail);
        break;
      case 'history':
        history = parseHistory(value, fail);
        break;
      default:
        throw fail(section, `unknown key (kiln.toml has: ${KNOWN_SECTIONS.join(', ')})`);
    }
  }
  return { file, registry, network, history };
}

const KNOWN_SECTIONS = ['registry', 'network', 'history'];
const HISTORY_KEYS = ['keep-duration', 'keep-builds'];

function parseHistory(value: unknown, fail: Fail): HistoryConfig {
  if (!isTable(value)) throw fail('history', `expected a table with ${HISTORY_KEYS.join(', ')}`);
  const config: { -readonly [K in keyof HistoryConfig]: HistoryConfig[K] } = {};
  for (const [name, setting] of Object.entries(value)) {
    const at = `history.${name}`;
    switch (name) {
      case 'keep-duration': {
        const ms = typeof setting === 'string' ? durationMs(setting) : undefined;
        if (ms === undefined) throw fail(at, 'expected a duration such as "48h" or "7d"');
        config.keepDurationMs = ms;
        break;
      }
      case 'keep-builds':
        if (typeof setting !== 'number' || !Number.isInteger(setting) || setting < 0) throw fail(at, 'expected a whole number of builds (0 keeps none)');
        config.keepBuilds = setting;
        break;
      default:
        throw fail(at, `unknown key ([history] takes ${HISTORY_KEYS.join(', ')})`);
    }
  }
  return config;
}
const NETWORK_KEYS = ['provider', 'cidr', 'cni-config', 'cni-bin-dirs', 'resolv-conf'];

function parseNetwork(value: unknown, base: string, fail: Fail): NetworkConfig {
  if (!isTable(value)) throw fail('network', `expected a table with ${NETWORK_KEYS.join(', ')}`);
  const config: { -readonly [K in keyof NetworkConfig]: NetworkConfig[K] } = {};
  const text = (setting: unknown, at: string): string => {
    if (typeof setting !== 'string' || setting === '') throw fail(at, 'expected a non-empty string');
    return setting;
  };
  for (const [name, setting] of Object.entries(value)) {
    const at = `network.${name}`;
    switch (name) {
      case 'provider': {
        const choice = text(setting, at);
        if (!(NETWORK_PROVIDER_CHOICES as readonly string[]).includes(choice)) throw fail(at, `"${choice}" is not one of ${NETWORK_PROVIDER_CHOICES.join(', ')}`);
        config.choice = choice as NetworkProviderChoice;
        break;
      }
      case 'cidr':
        config.cidr = text(setting, at);
        break;
      case 'cni-config':
        config.cniConfig = resolve(base, text(setting, at));
        break;
      case 'cni-bin-dirs':
        config.cniBinDirs = strings(setting, at, fail).map((p) => resolve(base, p));
        break;
      case 'resolv-conf':
        config.resolvConf = resolve(base, text(setting, at));
        break;
      default:
        throw fail(at, `unknown key ([network] takes ${NETWORK_KEYS.join(', ')})`);
    }
  }
  return config;
}
const REGISTRY_KEYS = ['mirrors', 'http', 'insecure', 'ca'];

type Fail = (key: string, message: string) => KilnError;

function isTable(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value) && !(value instanceof Date);
}

function parseRegistries(value: unknown, base: string, fail: Fail): RegistryHosts {
  if (!isTable(value)) throw fail('registry', 'expected a table of hosts, such as [registry."docker.io"]');
  // A Map first: a host named `__proto__` is only a host.
  const hosts = new Map<string, RegistryHostConfig>();
  for (const [name, settings] of Object.entries(value)) {
    const key = `registry.${JSON.stringify(name)}`;
    checkHost(name, key, fail);
    const host = canonicalHost(name);
    if (hosts.has(host)) throw fail(key, `${host} is configured twice (docker.io, index.docker.io and registry-1.docker.io are one host)`);
    hosts.set(host, parseHost(settings, key, base, fail));
  }
  return Object.fromEntries(hosts);
}

function parseHost(value: unknown, key: string, base: string, fail: Fail): RegistryHostConfig {
  if (!isTable(value)) throw fail(key, 'expected a table with mirrors, http, insecure or ca');
  const config: { mirrors?: string[]; http?: boolean; insecure?: boolean; ca?: string[] } = {};
  for (const [name, setting] of Object.entries(value)) {
    const at = `${key}.${name}`;
    switch (name) {
      case 'mirrors':
        config.mirrors = strings(setting, at, fail).map((mirror) => checkMirror(mirror, at, fail));
        break;
      case 'http':
      case 'insecure':
        if (typeof setting !== 'boolean') throw fail(at, 'expected true or false');
        config[name] = setting;
        break;
      case 'ca':
        config.ca = strings(setting, at, fail).map((p) => resolve(base, p));
        break;
      default:
        throw fail(at, `unknown key (a registry takes ${REGISTRY_KEYS.join(', ')})`);
    }
  }
  return config;
}

function strings(value: unknown, key: string, fail: Fail): string[] {
  if (!Array.isArray(value) || !value.every((v): v is string => typeof v === 'string' && v !== '')) {
    throw fail(key, 'expected a list of non-empty strings');
  }
  return value;
}

/**
 * A mirror: `HOST[:PORT]`, or `HOST[:PORT]/PATH` for a mirror that serves the
 * registry's repositories under PATH (a proxy project such as Harbor's), as
 * buildkitd.toml allows. A trailing `/` is dropped.
 */
function checkMirror(mirror: string, key: string, fail: Fail): string {
  const slash = mirror.indexOf('/');
  const host = slash === -1 ? mirror : mirror.slice(0, slash);
  if (slash === -1 || /^[a-z][a-z0-9+.-]*:\/\//i.test(mirror)) {
    checkHost(mirror, key, fail);
    return mirror;
  }
  checkHost(host, key, fail);
  const prefix = mirror.slice(slash + 1).replace(/\/+$/, '');
  if (prefix !== '' && !/^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/.test(prefix)) {
    throw fail(key, `"${mirror}": the path after the host must be repository path components (lowercase letters, digits, ".", "_", "-")`);
  }
  return prefix === '' ? host : `${host}/${prefix}`;
}

/** `HOST[:PORT]`, no scheme or path: plain HTTP is a setting of the host, not part of its name. */
function checkHost(host: string, key: string, fail: Fail): void {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(host)) {
    throw fail(key, `"${host}": give HOST[:PORT] without a scheme (for plain HTTP, set http = true under [registry."HOST"])`);
  }
  if (!/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$/.test(host)) throw fail(key, `"${host}" is not HOST[:PORT]`);
}
