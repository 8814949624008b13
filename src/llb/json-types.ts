/**
 * The raw JSON LLB v1 format, exactly as a person writes it (see
 * docs/llb-format.md). The loader turns this into the normalized types of
 * ./types.ts; the builder produces it. Optional fields have the defaults the
 * spec gives; modes may be numbers or octal strings, timestamps numbers or
 * decimal strings.
 */

/** An object holding exactly one of T's fields: `{ a } | { b } | ...`. */
export type OneOf<T> = { [K in keyof T]: Pick<T, K> }[keyof T];

/** An op output: a bare op name (output 0) or `{ op, output }`. */
export type RawInput = string | { readonly op: string; readonly output: number };

/** A file mode: a number, or an octal string such as `"0755"` or `"755"`. */
export type RawMode = number | string;

/** Unix time in nanoseconds: a safe integer, or a decimal string for larger values. */
export type RawTimestamp = number | string;

/** The whole file. */
export interface RawDefinition {
  readonly version: 1;
  readonly ops: Readonly<Record<string, RawOp>>;
  /** `null` = the empty filesystem. */
  readonly result: RawInput | null;
  readonly image?: RawImageSpec;
}

/** The OCI image config that image exporters write. */
export interface RawImageSpec {
  /** Name of a `docker-image://` or `oci-layout://` source op whose config is taken first. */
  readonly base?: string;
  readonly config: RawImageConfig;
}

/** Image config fields; with a base, each replaces the base's (`env` by variable name). */
export interface RawImageConfig {
  readonly env?: readonly string[];
  readonly entrypoint?: readonly string[];
  readonly cmd?: readonly string[];
  readonly workingDir?: string;
  readonly user?: string;
  readonly labels?: Readonly<Record<string, string>>;
  /** `"80"`, `"80/tcp"`, `"53/udp"`. */
  readonly exposedPorts?: readonly string[];
}

/** An OCI platform; `variant` defaults to "". */
export interface RawPlatform {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string;
}

/** What progress shows and whether to skip the cache; not part of the cache key. */
export interface RawMetadata {
  readonly description?: Readonly<Record<string, string>>;
  readonly ignoreCache?: boolean;
  readonly progressGroup?: { readonly id: string; readonly name: string; readonly weak?: boolean };
  /** BuildKit's per-op cache export hint (`OpMetadata.export_cache`); kiln keeps every result, so it only travels. */
  readonly exportCache?: boolean;
  /** The BuildKit capabilities the op needs (`OpMetadata.caps`); one kiln lacks is refused before anything runs. */
  readonly caps?: Readonly<Record<string, boolean>>;
}

/** The fields every op may have besides its body. */
export interface RawOpCommon {
  readonly inputs?: readonly RawInput[];
  readonly platform?: RawPlatform;
  /** `FIELD==VALUE` / `FIELD!=VALUE`, FIELD one of id, executor, snapshotter, platform, labels.KEY. */
  readonly constraints?: readonly string[];
  readonly metadata?: RawMetadata;
}

/** The op kinds, one of which an op holds. */
export interface RawOpBodies {
  readonly source: RawSource;
  readonly exec: RawExec;
  readonly file: RawFile;
  readonly merge: RawMerge;
  readonly diff: RawDiff;
}

/** An op: the common fields plus exactly one body. */
export type RawOp = RawOpCommon & OneOf<RawOpBodies>;

/** A `source` body: where the files come from. */
export interface RawSource {
  /** `docker-image://…`, `oci-layout://…`, `local://NAME`, `http(s)://…`, `git://…`, `git+https://…`, `git+file://…`. */
  readonly identifier: string;
  readonly attrs?: Readonly<Record<string, string>>;
}

/** The process an exec op runs. */
export interface RawExecMeta {
  readonly args: readonly string[];
  readonly env?: readonly string[];
  readonly cwd?: string;
  readonly user?: string;
  readonly hostname?: string;
  readonly extraHosts?: readonly RawExtraHost[];
  readonly ulimit?: readonly RawUlimit[];
  readonly cgroupParent?: string;
  readonly validExitCodes?: readonly number[];
  /** Proxy variables added to the process's environment (upper and lower case), as buildkitd adds them. */
  readonly proxyEnv?: RawProxyEnv;
  /** Remove the empty mount points the runtime made for mounts, parents included, from the result (buildkitd's flag). */
  readonly removeMountStubsRecursive?: boolean;
}

/** BuildKit's `pb.ProxyEnv`. */
export interface RawProxyEnv {
  readonly httpProxy?: string;
  readonly httpsProxy?: string;
  readonly ftpProxy?: string;
  readonly noProxy?: string;
  readonly allProxy?: string;
}

/** An /etc/hosts entry added for the process. */
export interface RawExtraHost {
  readonly host: string;
  readonly ip: string;
}

/** A resource limit of the process (`name` as in `ulimit`, e.g. `nofile`). */
export interface RawUlimit {
  readonly name: string;
  /** -1 = unlimited. */
  readonly soft: number;
  readonly hard: number;
}

/** Options of a cache mount: `id` defaults to the dest, `sharing` to "shared". */
export interface RawCacheOpt {
  readonly id?: string;
  readonly sharing?: 'shared' | 'private' | 'locked';
}

/** Options of a tmpfs mount. */
export interface RawTmpfsOpt {
  /** Bytes; 0 = unlimited. */
  readonly size?: number;
}

/** Options of a secret mount (mode defaults to 0400). */
export interface RawSecretOpt {
  readonly id: string;
  readonly uid?: number;
  readonly gid?: number;
  readonly mode?: RawMode;
  readonly optional?: boolean;
}

/** Options of an ssh-agent socket mount (`id` defaults to "default", mode to 0600). */
export interface RawSshOpt {
  readonly id?: string;
  readonly uid?: number;
  readonly gid?: number;
  readonly mode?: RawMode;
  readonly optional?: boolean;
}

/** A mount of an exec op; `input` and `output` default to -1 (scratch, none). */
export interface RawMount {
  readonly type?: 'bind' | 'cache' | 'tmpfs' | 'secret' | 'ssh';
  readonly dest: string;
  readonly input?: number;
  readonly selector?: string;
  readonly output?: number;
  readonly readonly?: boolean;
  readonly cache?: RawCacheOpt;
  readonly tmpfs?: RawTmpfsOpt;
  readonly secret?: RawSecretOpt;
  readonly ssh?: RawSshOpt;
  /** BuildKit's `Mount.contentCache` (how buildkitd keys a bind mount's content); kiln's keys always cover the content. */
  readonly contentCache?: 'default' | 'on' | 'off';
}

/** A secret exposed to the process as an environment variable. */
export interface RawSecretEnv {
  readonly id: string;
  readonly name: string;
  readonly optional?: boolean;
}

/** An `exec` body: a process run over mounts. */
export interface RawExec {
  readonly meta: RawExecMeta;
  readonly mounts: readonly RawMount[];
  readonly network?: 'sandbox' | 'host' | 'none';
  readonly security?: 'sandbox' | 'insecure';
  readonly secretEnv?: readonly RawSecretEnv[];
}

/** By numeric id or by a name looked up in the target's /etc/passwd and /etc/group. */
export interface RawChown {
  readonly user?: number | string;
  readonly group?: number | string;
}

/** Makes a directory (mode defaults to 0755). */
export interface RawMkdir {
  readonly path: string;
  readonly mode?: RawMode;
  readonly makeParents?: boolean;
  readonly owner?: RawChown;
  readonly timestamp?: RawTimestamp;
}

/** Writes a file (mode defaults to 0644). */
export interface RawMkfile {
  readonly path: string;
  readonly mode?: RawMode;
  /** UTF-8 contents; give this or `dataBase64`, not both. */
  readonly data?: string;
  readonly dataBase64?: string;
  readonly owner?: RawChown;
  readonly timestamp?: RawTimestamp;
}

/** Removes a path (a symlink is removed, never followed). */
export interface RawRm {
  readonly path: string;
  readonly allowNotFound?: boolean;
  readonly allowWildcard?: boolean;
}

/** Makes a symlink at `newpath` whose target is `oldpath`, stored as given. */
export interface RawSymlink {
  readonly oldpath: string;
  readonly newpath: string;
  readonly owner?: RawChown;
  readonly timestamp?: RawTimestamp;
}

/** Copies `src` of the secondary input to `dest`. */
export interface RawCopy {
  readonly src: string;
  readonly dest: string;
  readonly owner?: RawChown;
  /** A mode, or a chmod expression such as `"u+x,go-w"`. */
  readonly mode?: RawMode;
  readonly followSymlink?: boolean;
  readonly dirCopyContents?: boolean;
  readonly createDestPath?: boolean;
  readonly allowWildcard?: boolean;
  readonly allowEmptyWildcard?: boolean;
  readonly includePatterns?: readonly string[];
  readonly excludePatterns?: readonly string[];
  readonly timestamp?: RawTimestamp;
  readonly alwaysReplaceExistingDestPaths?: boolean;
  /** BuildKit's `attemptUnpackDockerCompatibility` (Dockerfile ADD of a local file): a tar archive is unpacked into dest, any other file copied. */
  readonly attemptUnpack?: boolean;
  /** Paths in the source that must exist (BuildKit's `required_paths`, from `COPY --parents`); the copy fails naming the first missing one. */
  readonly requiredPaths?: readonly string[];
}

/** The numbering fields every file action has besides its body. */
export interface RawFileActionCommon {
  /** 0..n-1: op input; n+k: result of action k; -1: scratch. */
  readonly input: number;
  /** Copy only: the filesystem to copy from (same numbering). */
  readonly secondaryInput?: number;
  /** The op output this action's result becomes; -1 = none. */
  readonly output?: number;
}

/** The action kinds, one of which a file action holds. */
export interface RawFileActionBodies {
  readonly mkdir: RawMkdir;
  readonly mkfile: RawMkfile;
  readonly rm: RawRm;
  readonly symlink: RawSymlink;
  readonly copy: RawCopy;
}

/** A file action: the numbering fields plus exactly one body. */
export type RawFileAction = RawFileActionCommon & OneOf<RawFileActionBodies>;

/** A `file` body: actions run in order. */
export interface RawFile {
  readonly actions: readonly RawFileAction[];
}

/** A `merge` body: inputs layered in order, later on top. */
export interface RawMerge {
  /** Indexes into the op's `inputs`, layered in order. */
  readonly inputs: readonly number[];
}

/** A `diff` body: the changes that turn `lower` into `upper`. */
export interface RawDiff {
  /** Index into the op's `inputs`, or -1 for scratch. */
  readonly lower: number;
  readonly upper: number;
}
