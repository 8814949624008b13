/**
 * A typed builder for JSON LLB v1, so programs can describe the same graphs a
 * file can. Each call names an op and returns handles to its outputs; the
 * op's `inputs` are collected from the handles it is given. `build()` returns
 * the raw JSON (what loadDefinition accepts); the builder itself validates
 * only what it must to number things, and leaves the rest to the loader.
 *
 * ```ts
 * const b = new DefinitionBuilder();
 * const ctx = b.local('ctx', { excludePatterns: ['*.tmp'] });
 * const app = b.file('app', [mkdir('/app', { mode: 0o755 }), copy(ctx, '/src', '/app')]);
 * const def = loadDefinition(b.build(app));
 * ```
 */
import { Buffer } from 'node:buffer';
import { ValidationError } from '../errors.js';
import { fieldPath } from './check.js';
import type {
  OneOf,
  RawCacheOpt,
  RawCopy,
  RawDefinition,
  RawExec,
  RawExecMeta,
  RawFileAction,
  RawFileActionBodies,
  RawImageConfig,
  RawInput,
  RawMetadata,
  RawMkdir,
  RawMkfile,
  RawMount,
  RawOp,
  RawOpBodies,
  RawPlatform,
  RawRm,
  RawSecretEnv,
  RawSecretOpt,
  RawSshOpt,
  RawSymlink,
  RawTmpfsOpt,
} from './json-types.js';
import type { OutputRef } from './types.js';

/** One output of an op added to a builder. */
export type OutputHandle = OutputRef;

/** A filesystem to start from: an op output, or null for scratch (the empty filesystem). */
export type FsInput = OutputHandle | null;

/** Scratch, the empty filesystem (reads better than a bare `null` at call sites). */
export function scratch(): null {
  return null;
}

/** Options every op takes. */
export interface OpOptions {
  /** Shown in progress instead of the op's summary (`llb.customname`). */
  readonly customName?: string;
  /** Run even when a cached result exists. */
  readonly ignoreCache?: boolean;
  readonly platform?: RawPlatform;
  readonly constraints?: readonly string[];
}

/** OpOptions whose fields may also be explicitly undefined, as destructuring leaves them. */
type LooseOpOptions = { readonly [K in keyof OpOptions]?: OpOptions[K] | undefined };

/** A file action, made by mkdir, mkfile, rm, symlink or copy. */
export type FileActionSpec =
  | Pick<RawFileActionBodies, 'mkdir'>
  | Pick<RawFileActionBodies, 'mkfile'>
  | Pick<RawFileActionBodies, 'rm'>
  | Pick<RawFileActionBodies, 'symlink'>
  | (Pick<RawFileActionBodies, 'copy'> & { readonly from: FsInput });

/** Makes a directory. */
export function mkdir(path: string, options: Omit<RawMkdir, 'path'> = {}): FileActionSpec {
  return { mkdir: { path, ...options } };
}

/** Writes a file; text is stored as UTF-8, bytes as base64. */
export function mkfile(path: string, data: string | Uint8Array, options: Omit<RawMkfile, 'path' | 'data' | 'dataBase64'> = {}): FileActionSpec {
  const contents = typeof data === 'string' ? { data } : { dataBase64: Buffer.from(data).toString('base64') };
  return { mkfile: { path, ...contents, ...options } };
}

/** Removes a path. */
export function rm(path: string, options: Omit<RawRm, 'path'> = {}): FileActionSpec {
  return { rm: { path, ...options } };
}

/** Makes a symlink at `newpath` pointing to `oldpath`. */
export function symlink(oldpath: string, newpath: string, options: Omit<RawSymlink, 'oldpath' | 'newpath'> = {}): FileActionSpec {
  return { symlink: { oldpath, newpath, ...options } };
}

/** Copies `src` of the filesystem `from` to `dest`. */
export function copy(from: FsInput, src: string, dest: string, options: Omit<RawCopy, 'src' | 'dest'> = {}): FileActionSpec {
  return { from, copy: { src, dest, ...options } };
}

/** A mount of an exec op. */
export interface MountSpec {
  readonly dest: string;
  readonly type?: NonNullable<RawMount['type']>;
  /** What a bind (or seeded cache) mount starts from; default scratch. */
  readonly input?: FsInput;
  readonly selector?: string;
  readonly readonly?: boolean;
  /** Whether the mount becomes an output of the op; by default every writable bind mount does. */
  readonly output?: boolean;
  readonly cache?: RawCacheOpt;
  readonly tmpfs?: RawTmpfsOpt;
  readonly secret?: RawSecretOpt;
  readonly ssh?: RawSshOpt;
}

/** An exec op: the process (the fields of `meta`), its mounts and its sandbox. */
export interface ExecSpec extends RawExecMeta, OpOptions {
  readonly mounts: readonly MountSpec[];
  readonly network?: NonNullable<RawExec['network']>;
  readonly security?: NonNullable<RawExec['security']>;
  readonly secretEnv?: readonly RawSecretEnv[];
}

/** The outputs of an exec op, by mount destination. */
export interface ExecOutputs {
  /** The output the mount at `dest` (default `/`) becomes; throws if it has none. */
  output(dest?: string): OutputHandle;
}

/** An op's `inputs`, each distinct handle once, in order of first use. */
class InputList {
  readonly refs: RawInput[] = [];
  readonly #indexes = new Map<string, number>();

  /** The input index of `input` (-1 for scratch), adding it on first use. */
  index(input: FsInput): number {
    if (input === null) return -1;
    const key = `${input.output}:${input.op}`;
    let index = this.#indexes.get(key);
    if (index === undefined) {
      index = this.refs.length;
      this.refs.push(input.output === 0 ? input.op : { op: input.op, output: input.output });
      this.#indexes.set(key, index);
    }
    return index;
  }
}

/** Builds a RawDefinition op by op. */
export class DefinitionBuilder {
  readonly #ops = new Map<string, RawOp>();

  /** A source op with any identifier and attrs. */
  source(name: string, identifier: string, attrs: Readonly<Record<string, string>> = {}, options: OpOptions = {}): OutputHandle {
    const source = Object.keys(attrs).length > 0 ? { identifier, attrs } : { identifier };
    return this.#add(name, { source }, new InputList(), options);
  }

  /** A host directory bound at build time with `--local NAME=DIR`; `name` defaults to the op's name. */
  local(
    opName: string,
    options: OpOptions & {
      readonly name?: string;
      readonly includePatterns?: readonly string[];
      readonly excludePatterns?: readonly string[];
      readonly followPaths?: readonly string[];
      readonly sharedKeyHint?: string;
    } = {},
  ): OutputHandle {
    const { name = opName, includePatterns, excludePatterns, followPaths, sharedKeyHint, ...opOptions } = options;
    const attrs: Record<string, string> = {};
    if (includePatterns !== undefined) attrs['local.includepattern'] = JSON.stringify(includePatterns);
    if (excludePatterns !== undefined) attrs['local.excludepatterns'] = JSON.stringify(excludePatterns);
    if (followPaths !== undefined) attrs['local.followpaths'] = JSON.stringify(followPaths);
    if (sharedKeyHint !== undefined) attrs['local.sharedkeyhint'] = sharedKeyHint;
    return this.source(opName, `local://${name}`, attrs, opOptions);
  }

  /** An image from a registry (`ref` as Docker normalises it). */
  image(name: string, ref: string, options: OpOptions & { readonly resolveMode?: 'default' | 'pull' | 'local' } = {}): OutputHandle {
    const { resolveMode, ...opOptions } = options;
    return this.source(name, `docker-image://${ref}`, resolveMode === undefined ? {} : { 'image.resolvemode': resolveMode }, opOptions);
  }

  /**
   * One file fetched over HTTP(S); `perm` is a mode number. `headers` are
   * sent with the request (`http.header.NAME`); `authHeaderSecret` names the
   * build secret (`--secret`) sent as the Authorization header.
   */
  http(
    name: string,
    url: string,
    options: OpOptions & {
      readonly checksum?: string;
      readonly filename?: string;
      readonly perm?: number;
      readonly uid?: number;
      readonly gid?: number;
      readonly headers?: Readonly<Record<string, string>>;
      readonly authHeaderSecret?: string;
    } = {},
  ): OutputHandle {
    const { checksum, filename, perm, uid, gid, headers, authHeaderSecret, ...opOptions } = options;
    const attrs: Record<string, string> = {};
    if (checksum !== undefined) attrs['http.checksum'] = checksum;
    if (filename !== undefined) attrs['http.filename'] = filename;
    if (perm !== undefined) attrs['http.perm'] = perm.toString(8).padStart(4, '0');
    if (uid !== undefined) attrs['http.uid'] = String(uid);
    if (gid !== undefined) attrs['http.gid'] = String(gid);
    for (const [header, value] of Object.entries(headers ?? {})) attrs[`http.header.${header}`] = value;
    if (authHeaderSecret !== undefined) attrs['http.authheadersecret'] = authHeaderSecret;
    return this.source(name, url, attrs, opOptions);
  }

  /**
   * A git checkout of `remote` at `ref` (a branch, tag or full commit id;
   * the remote's HEAD when omitted), only `subdir` when given. `remote` is
   * a URL git fetches (`https://`, `http://`, `git://`, `ssh://`,
   * `USER@HOST:PATH`, `file://`) or a git source identifier (`git://…`,
   * `git+https://…`, `git+file://…`). Credentials are named, never given:
   * secret ids (`--secret`) and an ssh agent id (`--ssh`).
   */
  git(
    name: string,
    remote: string,
    options: OpOptions & {
      readonly ref?: string;
      readonly subdir?: string;
      readonly keepGitDir?: boolean;
      readonly authTokenSecret?: string;
      readonly authHeaderSecret?: string;
      readonly sshId?: string;
      readonly knownSshHosts?: string;
      /** The commit `ref` must resolve to (a full id, or a prefix of one); the build fails otherwise. */
      readonly checksum?: string;
      /** Leaves submodules out of the checkout (their directories stay empty). */
      readonly skipSubmodules?: boolean;
    } = {},
  ): OutputHandle {
    const { ref, subdir, keepGitDir, authTokenSecret, authHeaderSecret, sshId, knownSshHosts, checksum, skipSubmodules, ...opOptions } = options;
    const attrs: Record<string, string> = {};
    let base: string;
    if (/^(?:git|git\+https|git\+file):\/\//.test(remote)) base = remote;
    else if (/^(?:https|file):\/\//.test(remote)) base = `git+${remote}`;
    else {
      // Other transports: a git:// identifier naming host and path, with the URL fetched in git.fullurl (as BuildKit writes it).
      const scp = /^(?:[^@/:]+@)?([^@/:]+):(?!\/\/)(.+)$/.exec(remote);
      const hostPath = scp === null ? remote.replace(/^[a-z+]+:\/\/(?:[^@/]*@)?/, '') : `${scp[1] ?? ''}/${(scp[2] ?? '').replace(/^\/+/, '')}`;
      base = `git://${hostPath}`;
      attrs['git.fullurl'] = remote;
    }
    const fragment = ref === undefined && subdir === undefined ? '' : `#${ref ?? ''}${subdir === undefined ? '' : `:${subdir}`}`;
    if (keepGitDir !== undefined) attrs['git.keepgitdir'] = String(keepGitDir);
    if (authTokenSecret !== undefined) attrs['git.authtokensecret'] = authTokenSecret;
    if (authHeaderSecret !== undefined) attrs['git.authheadersecret'] = authHeaderSecret;
    if (sshId !== undefined) attrs['git.mountsshsock'] = sshId;
    if (knownSshHosts !== undefined) attrs['git.knownsshhosts'] = knownSshHosts;
    if (checksum !== undefined) attrs['git.checksum'] = checksum;
    if (skipSubmodules !== undefined) attrs['git.skipsubmodules'] = String(skipSubmodules);
    return this.source(name, `${base}${fragment}`, attrs, opOptions);
  }

  /** Runs a process over mounts. Writable bind mounts become outputs, numbered in mount order. */
  exec(name: string, spec: ExecSpec): ExecOutputs {
    const { mounts, network, security, secretEnv, customName, ignoreCache, platform, constraints, ...meta } = spec;
    const inputs = new InputList();
    const outputs = new Map<string, number>();
    const rawMounts = mounts.map((mount): RawMount => {
      const { input, output, ...rest } = mount;
      const becomesOutput = output ?? ((mount.type ?? 'bind') === 'bind' && mount.readonly !== true);
      if (becomesOutput) outputs.set(mount.dest, outputs.size);
      return {
        ...rest,
        ...(input === undefined ? {} : { input: inputs.index(input) }),
        ...(becomesOutput ? { output: outputs.size - 1 } : {}),
      };
    });
    const exec: RawExec = {
      meta,
      mounts: rawMounts,
      ...(network === undefined ? {} : { network }),
      ...(security === undefined ? {} : { security }),
      ...(secretEnv === undefined ? {} : { secretEnv }),
    };
    this.#add(name, { exec }, inputs, { customName, ignoreCache, platform, constraints });
    return {
      output: (dest = '/') => {
        const output = outputs.get(dest);
        if (output === undefined) {
          throw new ValidationError([{ path: fieldPath(fieldPath('ops', name), 'exec.mounts'), message: `no mount at "${dest}" becomes an output` }]);
        }
        return { op: name, output };
      },
    };
  }

  /**
   * Runs file actions in a chain: the first changes `options.input` (default
   * scratch), each later one the result of the one before; the last result is
   * the op's output.
   */
  file(name: string, actions: readonly FileActionSpec[], options: OpOptions & { readonly input?: FsInput } = {}): OutputHandle {
    const { input = null, ...opOptions } = options;
    const inputs = new InputList();
    const first = inputs.index(input);
    // Action results are numbered after the op's inputs, so every input is collected first.
    for (const spec of actions) if ('copy' in spec) inputs.index(spec.from);
    const inputCount = inputs.refs.length;
    const rawActions = actions.map((spec, k): RawFileAction => {
      const numbering = { input: k === 0 ? first : inputCount + k - 1, output: k === actions.length - 1 ? 0 : -1 };
      return 'copy' in spec ? { ...numbering, secondaryInput: inputs.index(spec.from), copy: spec.copy } : { ...numbering, ...spec };
    });
    return this.#add(name, { file: { actions: rawActions } }, inputs, opOptions);
  }

  /** Layers `layers` in order, later on top. */
  merge(name: string, layers: readonly OutputHandle[], options: OpOptions = {}): OutputHandle {
    const inputs = new InputList();
    const merge = { inputs: layers.map((layer) => inputs.index(layer)) };
    return this.#add(name, { merge }, inputs, options);
  }

  /** The changes that turn `lower` into `upper`. */
  diff(name: string, lower: FsInput, upper: FsInput, options: OpOptions = {}): OutputHandle {
    const inputs = new InputList();
    const diff = { lower: inputs.index(lower), upper: inputs.index(upper) };
    return this.#add(name, { diff }, inputs, options);
  }

  /** The definition whose result is `result`; `image.base` is an image source's handle. */
  build(result: FsInput, image?: { readonly base?: OutputHandle; readonly config: RawImageConfig }): RawDefinition {
    const ref = result === null ? null : result.output === 0 ? result.op : { op: result.op, output: result.output };
    const rawImage = image === undefined ? undefined : { ...(image.base === undefined ? {} : { base: image.base.op }), config: image.config };
    return { version: 1, ops: Object.fromEntries(this.#ops), result: ref, ...(rawImage === undefined ? {} : { image: rawImage }) };
  }

  #add(name: string, body: OneOf<RawOpBodies>, inputs: InputList, options: LooseOpOptions): OutputHandle {
    if (this.#ops.has(name)) {
      throw new ValidationError([{ path: fieldPath('ops', name), message: `an op named "${name}" was already added` }]);
    }
    const { customName, ignoreCache, platform, constraints } = options;
    const metadata: RawMetadata = {
      ...(customName === undefined ? {} : { description: { 'llb.customname': customName } }),
      ...(ignoreCache === undefined ? {} : { ignoreCache }),
    };
    this.#ops.set(name, {
      ...(inputs.refs.length > 0 ? { inputs: inputs.refs } : {}),
      ...body,
      ...(platform === undefined ? {} : { platform }),
      ...(constraints === undefined ? {} : { constraints }),
      ...(Object.keys(metadata).length > 0 ? { metadata } : {}),
    });
    return { op: name, output: 0 };
  }
}
