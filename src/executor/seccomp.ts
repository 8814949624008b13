/**
 * Seccomp profiles in the JSON format Docker and containers/common ship
 * (`defaultAction`, `archMap`, `syscalls[]` with `includes`/`excludes`)
 * and their conversion to the OCI runtime spec's `linux.seccomp` for one
 * container: the rules that apply to its capabilities, the host's
 * architecture and kernel, and nothing else. Pure: the file is read by
 * process-facts.ts.
 */
import { ERROR_CODES, KilnError } from '../errors.js';

/** A syscall argument condition, the same in a profile and in the OCI spec. */
export interface SeccompArg {
  readonly index: number;
  readonly value: number;
  readonly valueTwo: number;
  /** `SCMP_CMP_EQ`, `SCMP_CMP_NE`, `SCMP_CMP_MASKED_EQ`, ... */
  readonly op: string;
}

/** When a profile rule applies: every condition given must hold. */
export interface SeccompCondition {
  /** Capabilities the container must all hold (includes) or none of which it may hold (excludes). */
  readonly caps?: readonly string[];
  /** Architectures in the profile's (Go) names: `amd64`, `arm64`, `x86`, ... */
  readonly arches?: readonly string[];
  /** The lowest kernel version (`major.minor`) the rule applies to; includes only. */
  readonly minKernel?: string;
}

/** One `syscalls[]` rule of a profile. */
export interface SeccompRule {
  readonly names: readonly string[];
  readonly action: string;
  readonly args: readonly SeccompArg[];
  readonly errnoRet?: number;
  readonly includes: SeccompCondition;
  readonly excludes: SeccompCondition;
}

/** A seccomp profile file. */
export interface SeccompProfile {
  readonly defaultAction: string;
  readonly defaultErrnoRet?: number;
  /** Native architecture (libseccomp name) -> the others its processes may use. */
  readonly archMap: readonly { readonly architecture: string; readonly subArchitectures: readonly string[] }[];
  /** The older form of archMap: architectures for every host. */
  readonly architectures: readonly string[];
  readonly syscalls: readonly SeccompRule[];
}

/** `linux.seccomp[].syscalls[]` of the OCI spec. */
export interface OciSeccompRule {
  readonly names: readonly string[];
  readonly action: string;
  readonly errnoRet?: number;
  readonly args?: readonly SeccompArg[];
}

/** `linux.seccomp` of the OCI spec. */
export interface OciSeccomp {
  readonly defaultAction: string;
  readonly defaultErrnoRet?: number;
  readonly architectures: readonly string[];
  readonly syscalls: readonly OciSeccompRule[];
}

/** What a profile is converted for. */
export interface SeccompTarget {
  /** The container's capabilities (`CAP_...`). */
  readonly capabilities: readonly string[];
  /** The host architecture as Node names it (`process.arch`). */
  readonly arch: string;
  /** The host kernel release (`os.release()`, e.g. `6.1.0-13-amd64`). */
  readonly kernel: string;
  /**
   * Sub-architectures (libseccomp names) the host kernel was built without
   * (see `kernelLacksArches`): left out of `architectures`, since no process
   * can make their system calls on this kernel. Each one listed costs the
   * runtime the whole rule set compiled once more, in every container.
   */
  readonly kernelLacks?: readonly string[];
}

/** Node's architecture -> the profile's name for it and libseccomp's native architecture. */
const ARCHES: Readonly<Record<string, { readonly profile: string; readonly native: string }>> = {
  x64: { profile: 'amd64', native: 'SCMP_ARCH_X86_64' },
  ia32: { profile: 'x86', native: 'SCMP_ARCH_X86' },
  arm64: { profile: 'arm64', native: 'SCMP_ARCH_AARCH64' },
  arm: { profile: 'arm', native: 'SCMP_ARCH_ARM' },
  ppc64: { profile: 'ppc64le', native: 'SCMP_ARCH_PPC64LE' },
  s390x: { profile: 's390x', native: 'SCMP_ARCH_S390X' },
  riscv64: { profile: 'riscv64', native: 'SCMP_ARCH_RISCV64' },
  mips64el: { profile: 'mips64le', native: 'SCMP_ARCH_MIPSEL64' },
};

/**
 * The `linux.seccomp` of a container with `target`'s capabilities on
 * `target`'s host: the profile's default action, the architectures its
 * archMap lists for the host, and the rules whose includes all hold and
 * whose excludes all do not, in the profile's order.
 */
export function ociSeccomp(profile: SeccompProfile, target: SeccompTarget): OciSeccomp {
  const arch = ARCHES[target.arch];
  const mapped = profile.archMap.find((a) => a.architecture === arch?.native);
  const lacks = new Set(target.kernelLacks);
  const architectures = mapped === undefined ? [...profile.architectures] : [mapped.architecture, ...mapped.subArchitectures.filter((a) => !lacks.has(a))];
  const caps = new Set(target.capabilities);
  const kernel = kernelVersion(target.kernel);
  const applies = (rule: SeccompRule): boolean => {
    const { includes: inc, excludes: exc } = rule;
    if (inc.caps !== undefined && !inc.caps.every((c) => caps.has(c))) return false;
    if (inc.arches !== undefined && inc.arches.length > 0 && !inc.arches.includes(arch?.profile ?? target.arch)) return false;
    if (inc.minKernel !== undefined && inc.minKernel !== '' && compareVersions(kernel, kernelVersion(inc.minKernel)) < 0) return false;
    if (exc.caps?.some((c) => caps.has(c)) === true) return false;
    if (exc.arches?.includes(arch?.profile ?? target.arch) === true) return false;
    return true;
  };
  return {
    defaultAction: profile.defaultAction,
    ...(profile.defaultErrnoRet === undefined ? {} : { defaultErrnoRet: profile.defaultErrnoRet }),
    architectures,
    syscalls: profile.syscalls.filter(applies).map((rule) => ({
      names: [...rule.names],
      action: rule.action,
      ...(rule.errnoRet === undefined ? {} : { errnoRet: rule.errnoRet }),
      ...(rule.args.length === 0 ? {} : { args: rule.args.map((a) => ({ ...a })) }),
    })),
  };
}

/** The kernel option without which a sub-architecture's system calls do not exist (Linux's Kconfig names). */
const SUB_ARCH_OPTIONS: Readonly<Record<string, string>> = {
  SCMP_ARCH_X86: 'CONFIG_IA32_EMULATION',
  SCMP_ARCH_X32: 'CONFIG_X86_X32_ABI',
  SCMP_ARCH_ARM: 'CONFIG_COMPAT',
  SCMP_ARCH_S390: 'CONFIG_COMPAT',
};

/**
 * The sub-architectures a kernel built with `config` (the text of
 * /proc/config.gz, unzipped) cannot run: those whose option is not `=y`.
 * Without the config nothing is known, and nothing is left out.
 */
export function kernelLacksArches(config: string | undefined): string[] {
  if (config === undefined) return [];
  const built = new Set(config.split('\n').filter((line) => line.endsWith('=y')).map((line) => line.slice(0, -2)));
  return Object.entries(SUB_ARCH_OPTIONS)
    .filter(([, option]) => !built.has(option))
    .map(([arch]) => arch);
}

/** `6.1.0-13-amd64` -> [6, 1, 0]; what is not a number ends the version. */
function kernelVersion(release: string): number[] {
  return (/^\d+(?:\.\d+)*/.exec(release)?.[0] ?? '0').split('.').map(Number);
}

function compareVersions(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/**
 * Reads a profile's JSON text, checking the fields the conversion uses.
 * Fails with an EXECUTOR error naming `file` and the bad field: a broken
 * system profile must stop sandboxed containers, not silently unconfine them.
 */
export function parseSeccompProfile(text: string, file: string): SeccompProfile {
  const bad = (where: string, what: string): KilnError =>
    new KilnError(ERROR_CODES.EXECUTOR, `seccomp profile ${file}: ${where} ${what}; fix or remove the file`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new KilnError(ERROR_CODES.EXECUTOR, `seccomp profile ${file} is not JSON (${(err as Error).message}); fix or remove the file`, { cause: err });
  }
  const top = asObject(json, 'the profile', bad);
  const strings = (value: unknown, where: string): string[] => {
    if (value === undefined || value === null) return [];
    if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) throw bad(where, 'must be an array of strings');
    return value;
  };
  const optionalNumber = (value: unknown, where: string): number | undefined => {
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) throw bad(where, 'must be a non-negative integer');
    return value;
  };
  const condition = (value: unknown, where: string): SeccompCondition => {
    if (value === undefined || value === null) return {};
    const c = asObject(value, where, bad);
    if (c['minKernel'] !== undefined && typeof c['minKernel'] !== 'string') throw bad(`${where}.minKernel`, 'must be a string');
    return {
      ...(c['caps'] === undefined ? {} : { caps: strings(c['caps'], `${where}.caps`) }),
      ...(c['arches'] === undefined ? {} : { arches: strings(c['arches'], `${where}.arches`) }),
      ...(typeof c['minKernel'] === 'string' ? { minKernel: c['minKernel'] } : {}),
    };
  };
  if (typeof top['defaultAction'] !== 'string') throw bad('defaultAction', 'must be a string');
  if (!Array.isArray(top['syscalls'])) throw bad('syscalls', 'must be an array');
  const archMap = top['archMap'] === undefined || top['archMap'] === null ? [] : top['archMap'];
  if (!Array.isArray(archMap)) throw bad('archMap', 'must be an array');
  const defaultErrnoRet = optionalNumber(top['defaultErrnoRet'], 'defaultErrnoRet');
  return {
    defaultAction: top['defaultAction'],
    ...(defaultErrnoRet === undefined ? {} : { defaultErrnoRet }),
    archMap: archMap.map((value: unknown, i) => {
      const a = asObject(value, `archMap[${i}]`, bad);
      if (typeof a['architecture'] !== 'string') throw bad(`archMap[${i}].architecture`, 'must be a string');
      return { architecture: a['architecture'], subArchitectures: strings(a['subArchitectures'], `archMap[${i}].subArchitectures`) };
    }),
    architectures: strings(top['architectures'], 'architectures'),
    syscalls: (top['syscalls'] as unknown[]).map((value, i): SeccompRule => {
      const where = `syscalls[${i}]`;
      const r = asObject(value, where, bad);
      // The oldest profiles name one syscall per rule.
      const names = typeof r['name'] === 'string' && r['names'] === undefined ? [r['name']] : strings(r['names'], `${where}.names`);
      if (typeof r['action'] !== 'string') throw bad(`${where}.action`, 'must be a string');
      const args = r['args'] === undefined || r['args'] === null ? [] : r['args'];
      if (!Array.isArray(args)) throw bad(`${where}.args`, 'must be an array');
      const errnoRet = optionalNumber(r['errnoRet'], `${where}.errnoRet`);
      return {
        names,
        action: r['action'],
        args: args.map((arg: unknown, j): SeccompArg => {
          const a = asObject(arg, `${where}.args[${j}]`, bad);
          const num = (key: string): number => optionalNumber(a[key], `${where}.args[${j}].${key}`) ?? 0;
          if (typeof a['op'] !== 'string') throw bad(`${where}.args[${j}].op`, 'must be a string');
          return { index: num('index'), value: num('value'), valueTwo: num('valueTwo'), op: a['op'] };
        }),
        ...(errnoRet === undefined ? {} : { errnoRet }),
        includes: condition(r['includes'], `${where}.includes`),
        excludes: condition(r['excludes'], `${where}.excludes`),
      };
    }),
  };
}

function asObject(value: unknown, where: string, bad: (where: string, what: string) => KilnError): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw bad(where, 'must be an object');
  return value as Record<string, unknown>;
}
