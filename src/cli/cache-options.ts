/** `--export-cache`, `--import-cache` (buildctl's syntax) and `--metadata-file`. */
import { randomUUID } from 'node:crypto';
import { rename, rm, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { CacheExportSpec, CacheImportSpec, ExportReport } from '../client/solve.js';
import { parseReference } from '../content/reference.js';
import { ERROR_CODES, KilnError } from '../errors.js';
import { parseCsvAttrs } from './options.js';

const EXPORT_KEYS: Readonly<Record<CacheExportSpec['type'], readonly string[]>> = {
  registry: ['type', 'ref', 'mode', 'compression', 'ignore-error', 'registry.insecure'],
  local: ['type', 'dest', 'tag', 'mode', 'compression', 'ignore-error'],
};
const IMPORT_KEYS: Readonly<Record<CacheImportSpec['type'], readonly string[]>> = {
  registry: ['type', 'ref', 'registry.insecure'],
  local: ['type', 'src', 'tag'],
};

/** `--export-cache type=registry,ref=REF[,mode=min|max][,compression=...][,ignore-error=true]` or `type=local,dest=DIR[,...]`. */
export function parseCacheExport(spec: string): CacheExportSpec {
  const { attrs, usage, type, flag } = parseCacheAttrs('--export-cache', spec, EXPORT_KEYS);
  const mode = oneOf(attrs['mode'], ['min', 'max'] as const, () => usage('mode must be min or max'));
  const compression = oneOf(attrs['compression'], ['gzip', 'uncompressed'] as const, () => usage('compression must be gzip or uncompressed'));
  const ignoreError = flag('ignore-error');
  const common = {
    ...(mode === undefined ? {} : { mode }),
    ...(compression === undefined ? {} : { compression }),
    ...(ignoreError === undefined ? {} : { ignoreError }),
  } as const;
  if (type === 'registry') {
    const insecure = flag('registry.insecure');
    return { type, ref: needRef(attrs, usage), ...common, ...(insecure === undefined ? {} : { insecure }) };
  }
  return { type, dest: needDir(attrs, 'dest', usage), ...common, ...(attrs['tag'] === undefined ? {} : { tag: attrs['tag'] }) };
}

/** `--import-cache type=registry,ref=REF` or `type=local,src=DIR`. */
export function parseCacheImport(spec: string): CacheImportSpec {
  const { attrs, usage, type, flag } = parseCacheAttrs('--import-cache', spec, IMPORT_KEYS);
  if (type === 'registry') {
    const insecure = flag('registry.insecure');
    return { type, ref: needRef(attrs, usage), ...(insecure === undefined ? {} : { insecure }) };
  }
  return { type, src: needDir(attrs, 'src', usage), ...(attrs['tag'] === undefined ? {} : { tag: attrs['tag'] }) };
}

type Usage = (message: string) => KilnError;

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
 * over it, so a reader sees the old file or the whole new one.
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
  const target = resolve(file);
  const part = `${target}.${randomUUID()}.part`;
  try {
    await writeFile(part, `${JSON.stringify(metadata, null, 2)}\n`);
    await rename(part, target);
  } catch (err) {
    throw new KilnError(ERROR_CODES.OUTPUT, `--metadata-file ${file}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  } finally {
    await rm(part, { force: true });
  }
}
