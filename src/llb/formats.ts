/**
 * The three forms a definition comes in, told apart by content: JSON LLB v1
 * (kiln's own), a binary BuildKit `pb.Definition` (what `buildctl build`
 * reads on stdin, what `dockerfile2llb` writes), and the JSON lines of
 * `buildctl debug dump-llb`. Each loads into the same Definition: the
 * protobuf forms go through JSON LLB, so one loader checks every form, and
 * their ops keep BuildKit's digests (sha256 of each op's bytes).
 */
import { isUtf8 } from 'node:buffer';
import type { Digest } from '../digest.js';
import { ERROR_CODES, KilnError, ValidationError } from '../errors.js';
import { ROOT_PATH } from './check.js';
import { formatDumpLlb, parseDumpLlb } from './dump-llb.js';
import type { RawDefinition } from './json-types.js';
import { type LoadOptions, loadDefinition, MAX_DEFINITION_BYTES, parseDefinitionBytes } from './load.js';
import { decodeDefinition, definitionToJson, encodeDefinition, jsonToEntries, type PbAsJson, type PbDefinition, type PbOpEntry } from './pb-convert.js';
import { PbWireError } from './pb-wire.js';
import type { Definition } from './types.js';

/** A definition's form: JSON LLB v1, a binary pb.Definition, or `buildctl debug dump-llb` JSON lines. */
export type DefinitionFormat = 'json' | 'pb' | 'dump';

/** The forms, in the words the CLI's `--format` and `--to` take. */
export const DEFINITION_FORMATS: readonly DefinitionFormat[] = ['json', 'pb', 'dump'];

const FORMAT_NAMES: Readonly<Record<DefinitionFormat, string>> = { json: 'JSON LLB', pb: 'pb.Definition (protobuf)', dump: 'dump-llb JSON lines' };

/** Options of parseAnyDefinition: LoadOptions, and a form to read instead of telling it from the content. */
export interface AnyLoadOptions extends LoadOptions {
  readonly format?: DefinitionFormat;
}

/** A definition read in any form, as JSON LLB (plus, for the protobuf forms, each op's BuildKit digest and entry). */
export interface ReadDefinition {
  readonly format: DefinitionFormat;
  readonly pb?: PbRead;
}

/** A protobuf form read: as JSON LLB, with each op's BuildKit digest, and the entries as given. */
export type PbRead = PbAsJson & { readonly entries: readonly PbOpEntry[] };

const decoder = new TextDecoder('utf-8', { ignoreBOM: false });

/** The first non-blank character of the text, and the keys of the first line's object when it is one. */
function sniff(bytes: Uint8Array): { json: boolean; dump: boolean } {
  // By the bytes, not the text: JSON with a bad byte further on is still JSON,
  // and gets the JSON loader's error (where the byte is), not protobuf's.
  let at = bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? 3 : 0;
  while (at < bytes.length && [0x20, 0x09, 0x0a, 0x0d].includes(bytes[at] ?? 0)) at++;
  const json = bytes[at] === 0x7b;
  const head = new TextDecoder().decode(bytes.subarray(at, Math.min(bytes.length, at + 4096)));
  return { json, dump: json && /^\{\s*"(?:Op|Digest|OpMetadata)"/.test(head) };
}

/** The forms to try, most likely first: the JSON forms when the content starts like JSON, else protobuf. */
function candidates(bytes: Uint8Array): DefinitionFormat[] {
  const s = sniff(bytes);
  if (s.dump) return ['dump', 'json', 'pb'];
  if (s.json) return ['json', 'dump', 'pb'];
  return ['pb', 'json', 'dump'];
}

function fromPb(def: PbDefinition, file: string | undefined): PbRead {
  return { ...definitionToJson(def, file), entries: def.entries };
}

/** Reads one form; throws what is wrong. */
function readAs(bytes: Uint8Array, format: DefinitionFormat, file: string | undefined): ReadDefinition {
  switch (format) {
    case 'json':
      // JSON LLB is parsed (and checked) by the loader itself; only its form is known here.
      return { format };
    case 'pb':
      return { format, pb: fromPb(decodeDefinition(bytes), file) };
    case 'dump': {
      if (!isUtf8(bytes)) throw new PbWireError('line 1', 'not UTF-8 text');
      const entries = parseDumpLlb(decoder.decode(bytes)).map((e): PbOpEntry => ({ ...e, digest: e.digest as Digest }));
      return { format, pb: fromPb({ entries }, file) };
    }
  }
}

function asDiagnostic(err: unknown, file: string | undefined): Error {
  if (err instanceof PbWireError) return new ValidationError([{ path: err.where, message: err.message.slice(err.where.length + 2) }], file);
  return err instanceof Error ? err : new Error(String(err));
}

/** Why reading `bytes` as `format` failed, in one line. */
function failure(err: unknown): string {
  if (err instanceof ValidationError) return err.diagnostics.map((d) => `${d.path}: ${d.message}`).slice(0, 2).join('; ');
  return err instanceof Error ? err.message : String(err);
}

/**
 * Tells the form of `bytes` (or takes options.format) and reads it. A file
 * no form reads says which forms were tried and why each failed; a file that
 * is clearly of one form (JSON that is an object, a dump line) gets that
 * form's own errors.
 */
export function readAnyDefinition(bytes: Uint8Array, options: AnyLoadOptions = {}): ReadDefinition & { parse: () => Definition } {
  if (bytes.length > MAX_DEFINITION_BYTES) {
    throw new ValidationError([{ path: ROOT_PATH, message: `the definition is ${bytes.length} bytes; kiln reads at most ${MAX_DEFINITION_BYTES}` }], options.file);
  }
  // An empty protobuf message is a valid, empty Definition (scratch); an empty file is far likelier a mistake.
  if (bytes.length === 0 && options.format !== 'pb') {
    throw new ValidationError([{ path: ROOT_PATH, message: 'the definition is empty (an empty pb.Definition, meaning scratch, needs --format pb)' }], options.file);
  }
  const load = (read: ReadDefinition): ReadDefinition & { parse: () => Definition } => ({
    ...read,
    parse: () => {
      if (read.pb === undefined) return parseDefinitionBytes(bytes, options);
      const definition = loadDefinition(read.pb.raw, { ...options, opDigests: read.pb.digests });
      return read.pb.locations === undefined ? definition : { ...definition, sourceLocations: read.pb.locations };
    },
  });
  if (options.format !== undefined) {
    try {
      return load(readAs(bytes, options.format, options.file));
    } catch (err) {
      throw asDiagnostic(err, options.file);
    }
  }
  const sniffed = sniff(bytes);
  const tried: string[] = [];
  for (const format of candidates(bytes)) {
    try {
      if (format === 'json') {
        if (!sniffed.json) throw new Error('does not start with "{"');
        return load(readAs(bytes, format, options.file));
      }
      return load(readAs(bytes, format, options.file));
    } catch (err) {
      // Content that is clearly this form gets this form's errors.
      if ((format === 'dump' && sniffed.dump) || (format === 'pb' && !sniffed.json && err instanceof ValidationError)) throw asDiagnostic(err, options.file);
      tried.push(`${FORMAT_NAMES[format]}: ${failure(err)}`);
    }
  }
  // A diagnostic at the root, like every other unreadable input: `FILE: (root): ...`.
  throw new ValidationError([{ path: ROOT_PATH, message: `not a definition kiln reads; tried ${tried.join(' | ')}` }], options.file);
}

/** Loads a definition in any form (see readAnyDefinition) into the normalized types. */
export function parseAnyDefinition(bytes: Uint8Array, options: AnyLoadOptions = {}): Definition {
  return readAnyDefinition(bytes, options).parse();
}

/**
 * Converts a definition in any form to `to`: JSON LLB text, pb.Definition
 * bytes, or dump-llb lines. JSON is checked by the loader first (what is
 * written is what kiln would build). Ops read from protobuf are written back
 * byte for byte as BuildKit wrote them, so their digests stay.
 */
export function convertDefinition(bytes: Uint8Array, to: DefinitionFormat, options: AnyLoadOptions = {}): Uint8Array {
  const read = readAnyDefinition(bytes, options);
  let raw: RawDefinition;
  if (read.pb !== undefined) raw = read.pb.raw;
  else {
    read.parse();
    raw = JSON.parse(decoder.decode(bytes).replace(/^\uFEFF/, '')) as RawDefinition;
  }
  return encodeRaw(raw, to);
}

/** JSON LLB (already checked) written in a form. */
export function encodeRaw(raw: RawDefinition, to: DefinitionFormat): Uint8Array {
  switch (to) {
    case 'json':
      return new TextEncoder().encode(`${JSON.stringify(raw, null, 2)}\n`);
    case 'pb':
      return encodeDefinition(jsonToEntries(raw));
    case 'dump':
      return new TextEncoder().encode(formatDumpLlb(jsonToEntries(raw)));
    default:
      throw new KilnError(ERROR_CODES.USAGE, `unknown format "${String(to)}"`);
  }
}

/**
 * JSON LLB (as DefinitionBuilder.build() returns it, or written by hand) as
 * the binary pb.Definition `buildctl build` reads: checked by the loader
 * first, so only a definition kiln would build is written.
 */
export function definitionToPb(raw: RawDefinition, options: LoadOptions = {}): Uint8Array {
  loadDefinition(raw, options);
  return encodeRaw(raw, 'pb');
}
