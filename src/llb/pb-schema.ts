/**
 * The messages of BuildKit's `solver/pb/ops.proto` (v0.24 and the fields
 * master added since) as a table that pb-wire.ts decodes and encodes. Field
 * numbers, wire types and the names `buildctl debug dump-llb` prints (Go's
 * encoding/json over the generated structs: the proto field name, and the
 * oneof's Go name for a oneof) come from that file.
 */

/** A scalar protobuf type. */
export type PbScalar = 'string' | 'bytes' | 'bool' | 'int32' | 'int64' | 'uint32' | 'uint64' | 'enum';

/** The messages of ops.proto that kiln reads or writes. */
export type PbMessageName =
  | 'Definition'
  | 'OpMetadata'
  | 'Source'
  | 'Locations'
  | 'Location'
  | 'Range'
  | 'Position'
  | 'SourceInfo'
  | 'ExportCache'
  | 'ProgressGroup'
  | 'LinuxResources'
  | 'Op'
  | 'Platform'
  | 'Input'
  | 'ExecOp'
  | 'Meta'
  | 'HostIP'
  | 'Ulimit'
  | 'SecretEnv'
  | 'CDIDevice'
  | 'ProxyEnv'
  | 'Mount'
  | 'TmpfsOpt'
  | 'CacheOpt'
  | 'SecretOpt'
  | 'SSHOpt'
  | 'SourceOp'
  | 'BuildOp'
  | 'BuildInput'
  | 'WorkerConstraints'
  | 'FileOp'
  | 'FileAction'
  | 'FileActionCopy'
  | 'FileActionMkFile'
  | 'FileActionMkDir'
  | 'FileActionRm'
  | 'FileActionSymlink'
  | 'ChownOpt'
  | 'UserOpt'
  | 'NamedUserOpt'
  | 'MergeOp'
  | 'MergeInput'
  | 'DiffOp'
  | 'LowerDiffInput'
  | 'UpperDiffInput'
  | 'PassthroughOp';

/** One field of a message. */
export type PbField =
  | { readonly no: number; readonly name: string; readonly kind: 'scalar'; readonly type: PbScalar; readonly repeated?: true; readonly oneof?: string }
  | { readonly no: number; readonly name: string; readonly kind: 'message'; readonly type: PbMessageName; readonly repeated?: true; readonly oneof?: string }
  | { readonly no: number; readonly name: string; readonly kind: 'map'; readonly key: 'string'; readonly value: PbScalar | PbMessageName };

/** A message: its fields in field-number order, and the Go names of its oneofs (dump-llb's JSON keys). */
export interface PbMessage {
  readonly name: PbMessageName;
  readonly fields: readonly PbField[];
  readonly byNumber: ReadonlyMap<number, PbField>;
  readonly oneofs: Readonly<Record<string, string>>;
}

/** A decoded message: field name → value. int64/uint64 are numbers when exact, else bigints. */
export type PbValue = string | number | bigint | boolean | Uint8Array | PbObject | readonly PbValue[] | { readonly [key: string]: PbValue };
export interface PbObject {
  readonly [field: string]: PbValue | undefined;
}

const SCALARS = new Set<string>(['string', 'bytes', 'bool', 'int32', 'int64', 'uint32', 'uint64', 'enum']);

/** `[no, name, type, flags]`: flags `r` repeated, `m` map (type = the value type), `o:NAME` in oneof NAME. */
type Row = readonly [number, string, string, string?];

function message(name: PbMessageName, rows: readonly Row[], oneofs: Readonly<Record<string, string>> = {}): PbMessage {
  const fields = rows
    .map(([no, fieldName, type, flags = '']): PbField => {
      const oneof = /^o:(\w+)$/.exec(flags)?.[1];
      const extra = { ...(flags === 'r' ? { repeated: true as const } : {}), ...(oneof === undefined ? {} : { oneof }) };
      if (flags === 'm') return { no, name: fieldName, kind: 'map', key: 'string', value: type as PbScalar | PbMessageName };
      return SCALARS.has(type)
        ? { no, name: fieldName, kind: 'scalar', type: type as PbScalar, ...extra }
        : { no, name: fieldName, kind: 'message', type: type as PbMessageName, ...extra };
    })
    .sort((a, b) => a.no - b.no);
  return { name, fields, byNumber: new Map(fields.map((f) => [f.no, f])), oneofs };
}

const MESSAGES: readonly PbMessage[] = [
  message('Definition', [
    [1, 'def', 'bytes', 'r'],
    [2, 'metadata', 'OpMetadata', 'm'],
    [3, 'Source', 'Source'],
  ]),
  message('OpMetadata', [
    [1, 'ignore_cache', 'bool'],
    [2, 'description', 'string', 'm'],
    [4, 'export_cache', 'ExportCache'],
    [5, 'caps', 'bool', 'm'],
    [6, 'progress_group', 'ProgressGroup'],
    [7, 'linux_resources', 'LinuxResources'],
  ]),
  message('Source', [
    [1, 'locations', 'Locations', 'm'],
    [2, 'infos', 'SourceInfo', 'r'],
  ]),
  message('Locations', [[1, 'locations', 'Location', 'r']]),
  message('Location', [
    [1, 'sourceIndex', 'int32'],
    [2, 'ranges', 'Range', 'r'],
  ]),
  message('Range', [
    [1, 'start', 'Position'],
    [2, 'end', 'Position'],
  ]),
  message('Position', [
    [1, 'line', 'int32'],
    [2, 'character', 'int32'],
  ]),
  message('SourceInfo', [
    [1, 'filename', 'string'],
    [2, 'data', 'bytes'],
    [3, 'definition', 'Definition'],
    [4, 'language', 'string'],
  ]),
  message('ExportCache', [[1, 'Value', 'bool']]),
  message('ProgressGroup', [
    [1, 'id', 'string'],
    [2, 'name', 'string'],
    [3, 'weak', 'bool'],
  ]),
  message('LinuxResources', [
    [1, 'memory', 'int64'],
    [2, 'memorySwap', 'int64'],
    [3, 'cpuShares', 'uint64'],
    [4, 'cpuPeriod', 'uint64'],
    [5, 'cpuQuota', 'int64'],
    [6, 'cpusetCpus', 'string'],
    [7, 'cpusetMems', 'string'],
  ]),
  message(
    'Op',
    [
      [1, 'inputs', 'Input', 'r'],
      [2, 'exec', 'ExecOp', 'o:op'],
      [3, 'source', 'SourceOp', 'o:op'],
      [4, 'file', 'FileOp', 'o:op'],
      [5, 'build', 'BuildOp', 'o:op'],
      [6, 'merge', 'MergeOp', 'o:op'],
      [7, 'diff', 'DiffOp', 'o:op'],
      [8, 'passthrough', 'PassthroughOp', 'o:op'],
      [10, 'platform', 'Platform'],
      [11, 'constraints', 'WorkerConstraints'],
    ],
    { op: 'Op' },
  ),
  message('Platform', [
    [1, 'Architecture', 'string'],
    [2, 'OS', 'string'],
    [3, 'Variant', 'string'],
    [4, 'OSVersion', 'string'],
    [5, 'OSFeatures', 'string', 'r'],
  ]),
  message('Input', [
    [1, 'digest', 'string'],
    [2, 'index', 'int64'],
  ]),
  message('ExecOp', [
    [1, 'meta', 'Meta'],
    [2, 'mounts', 'Mount', 'r'],
    [3, 'network', 'enum'],
    [4, 'security', 'enum'],
    [5, 'secretenv', 'SecretEnv', 'r'],
    [6, 'cdiDevices', 'CDIDevice', 'r'],
  ]),
  message('Meta', [
    [1, 'args', 'string', 'r'],
    [2, 'env', 'string', 'r'],
    [3, 'cwd', 'string'],
    [4, 'user', 'string'],
    [5, 'proxy_env', 'ProxyEnv'],
    [6, 'extraHosts', 'HostIP', 'r'],
    [7, 'hostname', 'string'],
    [9, 'ulimit', 'Ulimit', 'r'],
    [10, 'cgroupParent', 'string'],
    [11, 'removeMountStubsRecursive', 'bool'],
    [12, 'validExitCodes', 'int32', 'r'],
  ]),
  message('HostIP', [
    [1, 'Host', 'string'],
    [2, 'IP', 'string'],
  ]),
  message('Ulimit', [
    [1, 'Name', 'string'],
    [2, 'Soft', 'int64'],
    [3, 'Hard', 'int64'],
  ]),
  message('SecretEnv', [
    [1, 'ID', 'string'],
    [2, 'name', 'string'],
    [3, 'optional', 'bool'],
  ]),
  message('CDIDevice', [
    [1, 'name', 'string'],
    [2, 'optional', 'bool'],
  ]),
  message('ProxyEnv', [
    [1, 'http_proxy', 'string'],
    [2, 'https_proxy', 'string'],
    [3, 'ftp_proxy', 'string'],
    [4, 'no_proxy', 'string'],
    [5, 'all_proxy', 'string'],
  ]),
  message('Mount', [
    [1, 'input', 'int64'],
    [2, 'selector', 'string'],
    [3, 'dest', 'string'],
    [4, 'output', 'int64'],
    [5, 'readonly', 'bool'],
    [6, 'mountType', 'enum'],
    [19, 'TmpfsOpt', 'TmpfsOpt'],
    [20, 'cacheOpt', 'CacheOpt'],
    [21, 'secretOpt', 'SecretOpt'],
    [22, 'SSHOpt', 'SSHOpt'],
    [23, 'resultID', 'string'],
    [24, 'contentCache', 'enum'],
  ]),
  message('TmpfsOpt', [[1, 'size', 'int64']]),
  message('CacheOpt', [
    [1, 'ID', 'string'],
    [2, 'sharing', 'enum'],
  ]),
  message('SecretOpt', [
    [1, 'ID', 'string'],
    [2, 'uid', 'uint32'],
    [3, 'gid', 'uint32'],
    [4, 'mode', 'uint32'],
    [5, 'optional', 'bool'],
  ]),
  message('SSHOpt', [
    [1, 'ID', 'string'],
    [2, 'uid', 'uint32'],
    [3, 'gid', 'uint32'],
    [4, 'mode', 'uint32'],
    [5, 'optional', 'bool'],
  ]),
  message('SourceOp', [
    [1, 'identifier', 'string'],
    [2, 'attrs', 'string', 'm'],
  ]),
  message('BuildOp', [
    [1, 'builder', 'int64'],
    [2, 'inputs', 'BuildInput', 'm'],
    [3, 'def', 'Definition'],
    [4, 'attrs', 'string', 'm'],
  ]),
  message('BuildInput', [[1, 'input', 'int64']]),
  message('WorkerConstraints', [[1, 'filter', 'string', 'r']]),
  message('FileOp', [[2, 'actions', 'FileAction', 'r']]),
  message(
    'FileAction',
    [
      [1, 'input', 'int64'],
      [2, 'secondaryInput', 'int64'],
      [3, 'output', 'int64'],
      [4, 'copy', 'FileActionCopy', 'o:action'],
      [5, 'mkfile', 'FileActionMkFile', 'o:action'],
      [6, 'mkdir', 'FileActionMkDir', 'o:action'],
      [7, 'rm', 'FileActionRm', 'o:action'],
      [8, 'symlink', 'FileActionSymlink', 'o:action'],
    ],
    { action: 'Action' },
  ),
  message('FileActionCopy', [
    [1, 'src', 'string'],
    [2, 'dest', 'string'],
    [3, 'owner', 'ChownOpt'],
    [4, 'mode', 'int32'],
    [5, 'followSymlink', 'bool'],
    [6, 'dirCopyContents', 'bool'],
    [7, 'attemptUnpackDockerCompatibility', 'bool'],
    [8, 'createDestPath', 'bool'],
    [9, 'allowWildcard', 'bool'],
    [10, 'allowEmptyWildcard', 'bool'],
    [11, 'timestamp', 'int64'],
    [12, 'include_patterns', 'string', 'r'],
    [13, 'exclude_patterns', 'string', 'r'],
    [14, 'alwaysReplaceExistingDestPaths', 'bool'],
    [15, 'modeStr', 'string'],
    [16, 'required_paths', 'string', 'r'],
  ]),
  message('FileActionMkFile', [
    [1, 'path', 'string'],
    [2, 'mode', 'int32'],
    [3, 'data', 'bytes'],
    [4, 'owner', 'ChownOpt'],
    [5, 'timestamp', 'int64'],
  ]),
  message('FileActionMkDir', [
    [1, 'path', 'string'],
    [2, 'mode', 'int32'],
    [3, 'makeParents', 'bool'],
    [4, 'owner', 'ChownOpt'],
    [5, 'timestamp', 'int64'],
  ]),
  message('FileActionRm', [
    [1, 'path', 'string'],
    [2, 'allowNotFound', 'bool'],
    [3, 'allowWildcard', 'bool'],
  ]),
  message('FileActionSymlink', [
    [1, 'oldpath', 'string'],
    [2, 'newpath', 'string'],
    [3, 'owner', 'ChownOpt'],
    [4, 'timestamp', 'int64'],
  ]),
  message('ChownOpt', [
    [1, 'user', 'UserOpt'],
    [2, 'group', 'UserOpt'],
  ]),
  message(
    'UserOpt',
    [
      [1, 'byName', 'NamedUserOpt', 'o:user'],
      [2, 'byID', 'uint32', 'o:user'],
    ],
    { user: 'User' },
  ),
  message('NamedUserOpt', [
    [1, 'name', 'string'],
    [2, 'input', 'int64'],
  ]),
  message('MergeOp', [[1, 'inputs', 'MergeInput', 'r']]),
  message('MergeInput', [[1, 'input', 'int64']]),
  message('DiffOp', [
    [1, 'lower', 'LowerDiffInput'],
    [2, 'upper', 'UpperDiffInput'],
  ]),
  message('LowerDiffInput', [[1, 'input', 'int64']]),
  message('UpperDiffInput', [[1, 'input', 'int64']]),
  message('PassthroughOp', [
    [1, 'id', 'string'],
    [2, 'outputs', 'int64', 'r'],
  ]),
];

const BY_NAME: ReadonlyMap<string, PbMessage> = new Map(MESSAGES.map((m) => [m.name, m]));

/** The table entry of a message. */
export function pbMessage(name: PbMessageName): PbMessage {
  const found = BY_NAME.get(name);
  if (found === undefined) throw new TypeError(`no protobuf message ${name}`);
  return found;
}

/** True when a map's value type is a message. */
export function isMessageName(type: string): type is PbMessageName {
  return BY_NAME.has(type);
}

/** pb.NetMode, pb.SecurityMode, pb.MountType, pb.CacheSharingOpt, pb.MountContentCache: enum number ↔ kiln's word. */
export const PB_ENUMS = {
  network: ['sandbox', 'host', 'none'],
  security: ['sandbox', 'insecure'],
  mountType: ['bind', 'secret', 'ssh', 'cache', 'tmpfs'],
  sharing: ['shared', 'private', 'locked'],
  contentCache: ['default', 'on', 'off'],
} as const;
