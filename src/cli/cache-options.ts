/** `--export-cache`, `--import-cache` (buildctl's syntax) and `--metadata-file`. */
import { resolve } from 'node:path';
import { Readable } from 'node:stream';
import type { CacheExportSpec, CacheImportSpec, ExportReport } from '../client/solve.js';
import { parseReference } from '../content/reference.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import { writeFileAtomically } from '../exporter/staging.js';
import { parseCsvAttrs } from './options.js';

const EXPORT_KEYS: Readonly<Record<CacheExportSpec['type'], readonly string[]>> = {
  registry: ['type', 'ref', 'mode', 'compression', 'ignore-error', 'cache-mounts', 'registry.insecure'],
  local: ['type', 'dest', 'tag', 'mode', 'compression', 'ignore-error', 'cache-mounts'],
};
const IMPORT_KEYS: Readonly<Record<CacheImportSpec['type'], readonly string[]>> = {
  registry: ['type', 'ref', 'ignore-error', 'registry.insecure'],
  local: ['type', 'src', 'tag', 'ignore-error'],
};

/**
 * `--export-cache type=registry,ref=REF[,mode=min|max][,compression=...][,ignore-error=true][,cache-mounts=IDS]`
 * or `type=local,dest=DIR[,...]`. IDS is `all` or cache ids separated by `;`
 * or `:` (`cache-mounts=go;npm`), or by commas inside a quoted field
 * (`"cache-mounts=go,npm"`, as buildctl reads its CSV).
 */
export function parseCacheExport(spec: string): CacheExportSpec {
  const { attrs, usage, type, flag } = parseCacheAttrs('--export-cache', spec, EXPORT_KEYS);
  const mode = oneOf(attrs['mode'], ['min', 'max'] as const, () => usage('mode must be min or max'));
  const compression = oneOf(attrs['compression'], ['gzip', 'uncompressed'] as const, () => usage('compression must be gzip or uncompressed'));
  const ignoreError = flag('ignore-error');
  const cacheMounts = attrs['cache-mounts'] === undefined ? undefined : parseCacheMountIds(attrs['cache-mounts'], usage);
  const common = {
    ...(mode === undefined ? {} : { mode }),
    ...(cacheMounts === undefined ? {} : { cacheMounts }),
    ...(compression === undefined ? {} : { compression }),
    ...(ignoreError === undefined ? {} : { ignoreError }),
  } as const;
  if (type === 'registry') {
    const insecure = flag('registry.insecure');
    return { type, ref: needRef(attrs, usage), ...common, ...(insecure === undefined ? {} : { insecure }) };
  }
  return { type, dest: needDir(attrs, 'dest', usage), ...common, ...(attrs['tag'] === undefined ? {} : { tag: attrs['tag'] }) };
}

/** `--import-cache type=registry,ref=REF[,ignore-error=false]` or `type=local,src=DIR[,...]`. */
export function parseCacheImport(spec: string): CacheImportSpec {
  const { attrs, usage, type, flag } = parseCacheAttrs('--import-cache', spec, IMPORT_KEYS);
  const ignoreError = flag('ignore-error');
  const common = ignoreError === undefined ? {} : { ignoreError };
  if (type === 'registry') {
    const insecure = flag('registry.insecure');
    return { type, ref: needRef(attrs, usage), ...common, ...(insecure === undefined ? {} : { insecure }) };
  }
  return { type, src: needDir(attrs, 'src', usage), ...common, ...(attrs['tag'] === undefined ? {} : { tag: attrs['tag'] }) };
}

/** `all`, or cache ids separated by `;`, `:` or `,` (the last only inside a quoted field); each id once, in the order given. */
export function parseCacheMountIds(value: string, usage: Usage): readonly string[] | 'all' {
  if (value.trim() === 'all') return 'all';
  const ids = value
    .split(/[;:,]/)
    .map((id) => id.trim())
    .filter((id) => id !== '');
  if (ids.length === 0) throw usage('cache-mounts needs cache ids (separated by ";") or all');
  if (ids.includes('all')) throw usage('cache-mounts=all cannot be combined with cache ids');
  return [...new Set(ids)];
}

/** Makes the usage error of one spec. */
export type Usage = (message: string) => KilnError;

function oneOf<T extends string>(value: string | undefined, allowed: readonly T[], refuse: () => KilnError): T | undefined {
  if (value === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(value)) throw refuse();
  return value as T;
}

function parseCacheAttrs(name: string, spec: string, keys: Readonly<Record<'registry' | 'local', readonly string[]>>) {
  const attrs = parseCsvAttrs(name, spec);
  const usage: Usage = (message) => new KilnError(ERROR_CODES.USAGE, `${name} "${spec}": ${message}`);
  const type = attrs['type'];
  if (type !== 'registry' && type !== 'local') throw usage('type must be registry or local');
  const known = keys[type];
  const unknown = Object.keys(attrs).filter((k) => !known.includes(k));
  if (unknown.length > 0) throw usage(`unknown key ${unknown.map((k) => `"${k}"`).join(', ')} (type=${type} takes ${known.join(', ')})`);
  const flag = (key: string): boolean | undefined => {
    const v = attrs[key];
    if (v === undefined) return undefined;
    if (v !== 'true' && v !== 'false') throw usage(`${key} must be true or false`);
    return v === 'true';
  };
  return { attrs, usage, type, flag } as const;
}

function needRef(attrs: Record<string, string>, usage: Usage): string {
  const ref = attrs['ref'];
  if (ref === undefined || ref === '') throw usage('ref is required');
  try {
    parseReference(ref);
  } catch (err) {
    throw usage(err instanceof Error ? err.message : String(err));
  }
  return ref;
}

function needDir(attrs: Record<string, string>, key: string, usage: Usage): string {
  const dir = attrs[key];
  if (dir === undefined || dir === '') throw usage(`${key} is required`);
  return resolve(dir);
}

/**
 * `--metadata-file FILE`: what the outputs wrote, with buildctl's keys for
 * the image output (`containerimage.digest`, `containerimage.descriptor`,
 * `image.name`) and kiln's `cache.exports`. Written beside FILE and renamed
 * over it, so a reader sees the old file or the whole new one (a device such
 * as /dev/null is written in place).
 */
export async function writeMetadataFile(file: string, report: ExportReport): Promise<void> {
  const metadata: Record<string, unknown> = {};
  const image = report.outputs.find((o) => o.descriptor !== undefined);
  if (image?.descriptor !== undefined) {
    metadata['containerimage.digest'] = image.descriptor.digest;
    metadata['containerimage.descriptor'] = image.descriptor;
  }
  const names = report.outputs.flatMap((o) => (o.descriptor !== undefined && o.name !== undefined ? [o.name] : []));
  if (names.length > 0) metadata['image.name'] = names.join(',');
  if (report.caches.length > 0) metadata['cache.exports'] = report.caches.map((c) => ({ type: c.type, ref: c.ref, digest: c.descriptor.digest, descriptor: c.descriptor }));
  try {
    await writeFileAtomically(resolve(file), Readable.from([`${JSON.stringify(metadata, null, 2)}\n`]), undefined);
  } catch (err) {
    throw new KilnError(ERROR_CODES.OUTPUT, `--metadata-file ${file}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}
