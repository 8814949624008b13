/**
 * The canonical form of an op, which its cache key and its digest hash. It
 * holds everything that decides the op's result (defaults filled in, so
 * writing a default out or leaving it out makes no difference) and nothing
 * else: not the op's name, not its metadata. Inputs appear as the identity of
 * what they refer to, so renaming an op changes no key, and two files that
 * describe the same op share its result.
 */
import { type CacheKey, type Digest, digestOf, sha256 } from '../digest.js';
import { assertNever, ERROR_CODES, KilnError } from '../errors.js';
import type { ExecMount, FileAction, Op, OpBody } from './types.js';

/** The parts of an op its canonical form is made of. */
export type CanonicalParts = Pick<Op, 'inputs' | 'body' | 'platform' | 'constraints'>;

/**
 * The JSON-able canonical form of `op`, with input i replaced by
 * `{ id: inputIds[i], output }`. An mkfile's bytes appear as their sha256
 * digest, bigint timestamps as decimal strings, copy modes as their bits (a
 * number) or expression (a string).
 */
export function canonicalOp(op: CanonicalParts, inputIds: readonly string[]): unknown {
  if (inputIds.length !== op.inputs.length) {
    throw new KilnError(ERROR_CODES.INTERNAL, `canonicalOp: ${op.inputs.length} inputs but ${inputIds.length} input ids`);
  }
  return {
    inputs: op.inputs.map((ref, i) => ({ id: inputIds[i], output: ref.output })),
    platform: op.platform,
    constraints: op.constraints,
    [op.body.kind]: canonicalBody(op.body),
  };
}

/**
 * The cache key of `op` given its inputs' cache keys: the digest of its
 * canonical form. (Op.digest is the same function over the inputs' digests.)
 */
export function opCacheKey(op: CanonicalParts, inputKeys: readonly CacheKey[]): CacheKey {
  return digestOf(canonicalOp(op, inputKeys)) as string as CacheKey;
}

function canonicalBody(body: OpBody): unknown {
  switch (body.kind) {
    case 'source':
      return body.source;
    case 'exec': {
      // Proxy settings are left out of the key, as BuildKit leaves them out.
      const { proxyEnv: _proxy, ...meta } = body.exec.meta;
      return { ...body.exec, meta, mounts: body.exec.mounts.map(canonicalMount) };
    }
    case 'file':
      return { actions: body.file.actions.map(canonicalAction) };
    case 'merge':
      return body.merge;
    case 'diff':
      return body.diff;
    default:
      return assertNever(body, 'op kind');
  }
}

/**
 * An exec mount as format v1 first stored it: every field of every kind,
 * the ones a kind does not take at their fixed values. Keys (and digests)
 * stay what they were when the loaded mount was one record for all kinds.
 */
function canonicalMount(mount: ExecMount): unknown {
  const none = { input: -1, selector: '', output: -1 };
  switch (mount.type) {
    case 'bind':
      return mount;
    case 'cache':
      return { ...none, ...mount };
    case 'tmpfs':
      return { ...none, ...mount };
    case 'secret':
      return { ...none, readonly: true, ...mount };
    case 'ssh':
      return { ...none, readonly: true, ...mount };
    default:
      return assertNever(mount, 'mount type');
  }
}

/**
 * The digest of an mkfile's contents, taken once per buffer. The digest
 * stands in for the bytes in the canonical form, so an op with 50 MB of
 * inline data hashes a short string each time its digest or cache key is
 * taken, rather than re-encoding and re-hashing the 50 MB.
 */
const dataDigests = new WeakMap<Uint8Array, Digest>();

function dataDigest(data: Uint8Array): Digest {
  let digest = dataDigests.get(data);
  if (digest === undefined) {
    digest = sha256(data);
    dataDigests.set(data, digest);
  }
  return digest;
}

const decimal = (timestamp: bigint | undefined): string | undefined => timestamp?.toString();

function canonicalAction(action: FileAction): unknown {
  const numbering = { input: action.input, secondaryInput: action.secondaryInput, output: action.output };
  switch (action.kind) {
    case 'mkdir':
      return { ...numbering, mkdir: { ...action.mkdir, timestamp: decimal(action.mkdir.timestamp) } };
    case 'mkfile': {
      const { data, timestamp } = action.mkfile;
      return { ...numbering, mkfile: { ...action.mkfile, data: dataDigest(data), timestamp: decimal(timestamp) } };
    }
    case 'rm':
      return { ...numbering, rm: action.rm };
    case 'symlink':
      return { ...numbering, symlink: { ...action.symlink, timestamp: decimal(action.symlink.timestamp) } };
    case 'copy': {
      const { mode, timestamp } = action.copy;
      const canonicalMode = mode === undefined ? undefined : mode.kind === 'bits' ? mode.bits : mode.expr;
      return { ...numbering, copy: { ...action.copy, mode: canonicalMode, timestamp: decimal(timestamp) } };
    }
    default:
      return assertNever(action, 'file action');
  }
}
