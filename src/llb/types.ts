/**
 * JSON LLB v1 after loading: every field validated, every default filled in,
 * modes as numbers. This is what the rest of kiln consumes; the raw JSON shape
 * is only seen by the loader. See docs/llb-format.md and
 * ../shared/spec/llb-json-v1.md.
 */
import type { Digest } from '../digest.js';

/** A reference to one output of an op, or scratch (`null`). */
export interface OutputRef {
  readonly op: string;
  readonly output: number;
}

export interface Platform {
  readonly os: string;
  readonly architecture: string;
  readonly variant: string;
}

/** Not part of the cache key. */
export interface OpMetadata {
  readonly description: Readonly<Record<string, string>>;
  readonly ignoreCache: boolean;
  readonly progressGroup?: { readonly id: string; readonly name: string };
}

export interface SourceOp {
  readonly identifier: string;
  readonly attrs: Readonly<Record<string, string>>;
}

/** The resource limits an exec op may set (`RLIMIT_` + the upper-case name). */
/**
 * The PATH of a process whose op sets none, and of an image's config when
 * nothing gives one (BuildKit's system.DefaultPathEnv on Linux, as Docker).
 */
export const DEFAULT_PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export const ULIMIT_NAMES = ['core', 'cpu', 'data', 'fsize', 'locks', 'memlock', 'msgqueue', 'nice', 'nofile', 'nproc', 'rss', 'rtprio', 'rttime', 'sigpending', 'stack'] as const;

export interface ExecMeta {
  readonly args: readonly string[];
  readonly env: readonly string[];
  readonly cwd: string;
  readonly user: string;
  readonly hostname: string;
  readonly extraHosts: readonly { readonly host: string; readonly ip: string }[];
  readonly ulimit: readonly { readonly name: string; readonly soft: number; readonly hard: number }[];
  readonly cgroupParent: string;
  readonly validExitCodes: readonly number[];
  /**
   * `NAME=value` entries from the definition's proxy settings, added to the
   * environment when the process runs; not part of the cache key, as in
   * BuildKit (a proxy changes how files are fetched, not what they are).
   */
  readonly proxyEnv?: readonly string[];
  /** BuildKit's removeMountStubsRecursive: the mount stubs the runtime made, parents included, leave no trace in the result. */
  readonly removeMountStubsRecursive?: true;
}

export type MountType = 'bind' | 'cache' | 'tmpfs' | 'secret' | 'ssh';
export type CacheSharing = 'shared' | 'private' | 'locked';

/** A bind mount of an input (or scratch): the root, a writable work dir, or a read-only view. */
export interface BindExecMount {
  readonly type: 'bind';
  readonly dest: string;
  /** Input index, -1 = scratch. */
  readonly input: number;
  /** Path inside the input to mount; "" = the whole input. */
  readonly selector: string;
  /** Output index this mount becomes, -1 = none. */
  readonly output: number;
  readonly readonly: boolean;
}

/** A persistent cache directory, seeded from an input (the path its selector picks) when first made. */
export interface CacheExecMount {
  readonly type: 'cache';
  readonly dest: string;
  /** Input index, -1 = none. */
  readonly input: number;
  readonly selector: string;
  readonly readonly: boolean;
  readonly cache: { readonly id: string; readonly sharing: CacheSharing };
}

/** A fresh tmpfs. */
export interface TmpfsExecMount {
  readonly type: 'tmpfs';
  readonly dest: string;
  /** As the definition says; a tmpfs is always writable, but the flag is part of the op's identity (its cache key). */
  readonly readonly: boolean;
  /** Bytes; 0 = the kernel's default. */
  readonly tmpfs: { readonly size: number };
}

/** Who owns a secret file or an ssh socket in the container, its mode, and whether it may be missing. */
export interface MountOwnership {
  readonly uid: number;
  readonly gid: number;
  readonly mode: number;
  readonly optional: boolean;
}

/** A build secret as a read-only file. */
export interface SecretExecMount {
  readonly type: 'secret';
  readonly dest: string;
  readonly secret: { readonly id: string } & MountOwnership;
}

/** A socket proxied to an SSH agent. */
export interface SshExecMount {
  readonly type: 'ssh';
  readonly dest: string;
  readonly ssh: { readonly id: string } & MountOwnership;
}

/** One mount of an exec op, as loaded: each kind with exactly its fields. */
export type ExecMount = BindExecMount | CacheExecMount | TmpfsExecMount | SecretExecMount | SshExecMount;

export type NetworkMode = 'sandbox' | 'host' | 'none';
export type SecurityMode = 'sandbox' | 'insecure';

export interface ExecOp {
  readonly meta: ExecMeta;
  readonly mounts: readonly ExecMount[];
  readonly network: NetworkMode;
  readonly security: SecurityMode;
  readonly secretEnv: readonly { readonly id: string; readonly name: string; readonly optional: boolean }[];
}

/** `user`/`group` by numeric id or by name looked up in the target's /etc files. */
export interface ChownOpt {
  readonly user?: number | string;
  readonly group?: number | string;
}

export interface MkdirAction {
  readonly path: string;
  readonly mode: number;
  readonly makeParents: boolean;
  readonly owner?: ChownOpt;
  /** Unix time in nanoseconds. */
  readonly timestamp?: bigint;
}

export interface MkfileAction {
  readonly path: string;
  readonly mode: number;
  /** File contents (decoded from `data` or `dataBase64`). */
  readonly data: Uint8Array;
  readonly owner?: ChownOpt;
  readonly timestamp?: bigint;
}

export interface RmAction {
  readonly path: string;
  readonly allowNotFound: boolean;
  readonly allowWildcard: boolean;
}

export interface SymlinkAction {
  readonly oldpath: string;
  readonly newpath: string;
  readonly owner?: ChownOpt;
  readonly timestamp?: bigint;
}

/** A copy mode: numeric bits, or a chmod expression such as `u+x,go-w`. */
export type CopyMode = { readonly kind: 'bits'; readonly bits: number } | { readonly kind: 'chmod'; readonly expr: string };

export interface CopyAction {
  readonly src: string;
  readonly dest: string;
  readonly owner?: ChownOpt;
  readonly mode?: CopyMode;
  readonly followSymlink: boolean;
  readonly dirCopyContents: boolean;
  readonly createDestPath: boolean;
  readonly allowWildcard: boolean;
  readonly allowEmptyWildcard: boolean;
  readonly includePatterns: readonly string[];
  readonly excludePatterns: readonly string[];
  readonly timestamp?: bigint;
  readonly alwaysReplaceExistingDestPaths: boolean;
  /**
   * BuildKit's attemptUnpackDockerCompatibility (Dockerfile ADD of a local
   * file): a tar archive (plain, gzip, bzip2, xz or zstd) is unpacked into
   * dest; any other file is copied as it is. Present only when set, so other
   * copies keep their cache keys.
   */
  readonly attemptUnpack?: true;
  /**
   * Paths in the source that must exist for the copy to run (BuildKit's
   * `required_paths`: `COPY --parents` with a pattern that has no wildcard).
   * Present only when some are given.
   */
  readonly requiredPaths?: readonly string[];
}

export type FileActionBody =
  | { readonly kind: 'mkdir'; readonly mkdir: MkdirAction }
  | { readonly kind: 'mkfile'; readonly mkfile: MkfileAction }
  | { readonly kind: 'rm'; readonly rm: RmAction }
  | { readonly kind: 'symlink'; readonly symlink: SymlinkAction }
  | { readonly kind: 'copy'; readonly copy: CopyAction };

export type FileAction = FileActionBody & {
  /** 0..n-1: op input; n+k: result of action k; -1: scratch. */
  readonly input: number;
  readonly secondaryInput: number;
  /** Op output this action's result becomes, -1 = none. */
  readonly output: number;
};

export interface FileOp {
  readonly actions: readonly FileAction[];
}

export interface MergeOp {
  /** Input indexes (into the op's `inputs`), layered in order, later on top. */
  readonly inputs: readonly number[];
}

export interface DiffOp {
  /** Input index, or -1 for scratch. */
  readonly lower: number;
  readonly upper: number;
}

export type OpBody =
  | { readonly kind: 'source'; readonly source: SourceOp }
  | { readonly kind: 'exec'; readonly exec: ExecOp }
  | { readonly kind: 'file'; readonly file: FileOp }
  | { readonly kind: 'merge'; readonly merge: MergeOp }
  | { readonly kind: 'diff'; readonly diff: DiffOp };

/** One op of a loaded definition. */
export interface Op {
  /** The op's name in the file (its key under `ops`). */
  readonly name: string;
  readonly inputs: readonly OutputRef[];
  readonly body: OpBody;
  /** Defaulted to the host platform when absent. */
  readonly platform: Platform;
  readonly constraints: readonly string[];
  readonly metadata: OpMetadata;
  /**
   * Name-independent digest of the op's definition: canonical JSON of the
   * normalized op (metadata left out) with each input replaced by its own
   * definition digest and output index. Ops with equal digests are the same
   * vertex. This is the `digest` shown in progress.
   */
  readonly digest: Digest;
  /** Number of outputs the op produces. */
  readonly outputCount: number;
}

export interface ImageConfig {
  readonly env?: readonly string[];
  readonly entrypoint?: readonly string[];
  readonly cmd?: readonly string[];
  readonly workingDir?: string;
  readonly user?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly exposedPorts?: readonly string[];
}

export interface ImageSpec {
  readonly base?: string;
  readonly config: ImageConfig;
}

/** A loaded, validated JSON LLB definition. */
export interface Definition {
  readonly version: 1;
  /**
   * The ops reachable from `result`, in a topological order (inputs first).
   * Unreachable ops are validated but left out: they are never run.
   */
  readonly ops: ReadonlyMap<string, Op>;
  /** null = the empty filesystem. */
  readonly result: OutputRef | null;
  readonly image?: ImageSpec;
  /** Where the definition came from, for messages ("-" for stdin). */
  readonly file?: string;
  /**
   * Where each op (by name) came from in the frontend's own source (a
   * Dockerfile's lines), from a pb.Definition's source map; shown when the
   * op fails. Not part of any cache key.
   */
  readonly sourceLocations?: ReadonlyMap<string, SourceLocation>;
}

/** A place in a frontend's source: the file, its line ranges (1-based, inclusive), and its text when known. */
export interface SourceLocation {
  readonly file: string;
  readonly lines: readonly { readonly start: number; readonly end: number }[];
  readonly text?: string;
}
