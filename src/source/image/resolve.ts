/**
 * Resolving `docker-image://REF` and `oci-layout://NAME...` sources to one
 * platform's manifest and config, stored in the content store.
 *
 * `image.resolvemode` decides when the registry is asked: `default` uses
 * the manifest kiln resolved for the same reference and platform before,
 * when it and its config are still in the content store, and asks the
 * registry otherwise; `pull` always asks; `local` never does, and fails when
 * kiln has not resolved the reference before. `default` and `local` first
 * use an image kiln keeps under that name (a `type=image` output).
 */
import { formatPlatform } from '../../content/platform.js';
import { formatReference, parseReference, type ImageReference } from '../../content/reference.js';
import type { ContentStore } from '../../content/store.js';
import { configLayersProblem, type Descriptor, type ImageConfig, type ImageManifest, type ImagePlatform } from '../../content/types.js';
import { ERROR_CODES, KilnError } from '../../errors.js';
import type { Platform } from '../../llb/types.js';
import type { SourceSite } from './oci-layout-id.js';
import type { ImageContext, ResolvedImage } from './types.js';

export type ResolveMode = 'default' | 'pull' | 'local';

const RESOLVE_MODES: readonly ResolveMode[] = ['default', 'pull', 'local'];

/** The OCI platform of an op's platform. */
export function imagePlatform(platform: Platform): ImagePlatform {
  return platform.variant === ''
    ? { os: platform.os, architecture: platform.architecture }
    : { os: platform.os, architecture: platform.architecture, variant: platform.variant };
}

/** `image.resolvemode` of a docker-image source's attrs. */
export function resolveModeOf(attrs: Readonly<Record<string, string>>, site: SourceSite): ResolveMode {
  const mode = attrs['image.resolvemode'] ?? 'default';
  if (!(RESOLVE_MODES as readonly string[]).includes(mode)) {
    throw new KilnError(ERROR_CODES.IMAGE, `image.resolvemode must be default, pull or local, got "${mode}"`, {
      op: site.op,
      field: `ops.${site.op}.source.attrs["image.resolvemode"]`,
    });
  }
  return mode as ResolveMode;
}

function recordKey(ref: ImageReference, platform: ImagePlatform): string {
  return `${formatReference(ref)} ${formatPlatform(platform)}`;
}

export interface ResolveDockerImageOptions {
  readonly text: string;
  readonly mode: ResolveMode;
  readonly platform: ImagePlatform;
  readonly images: ImageContext;
  readonly signal: AbortSignal;
  readonly site: SourceSite;
}

/** Resolves `docker-image://REF` to its manifest for the platform. */
export async function resolveDockerImage(options: ResolveDockerImageOptions): Promise<ResolvedImage> {
  const { images, platform, signal } = options;
  const content = images.content;
  let ref: ImageReference;
  try {
    ref = parseReference(options.text);
  } catch (err) {
    throw withSite(err, options.site);
  }
  const name = formatReference(ref);
  const key = recordKey(ref, platform);
  const fetchLayer = async (layer: Descriptor, layerSignal: AbortSignal): Promise<void> => {
    if (await content.has(layer.digest)) return;
    if (options.mode === 'local') {
      throw new KilnError(ERROR_CODES.IMAGE, `${name}: layer ${layer.digest} is not in kiln's store and image.resolvemode=local never pulls`, options.site);
    }
    await (await images.registry()).fetchBlob(ref, layer, content, layerSignal);
  };

  if (options.mode !== 'pull') {
    // An image a `type=image,name=...` output kept here is used as it is.
    const named = content.records.images.get(name);
    const kept = named === undefined ? undefined : await readStored(content, named.manifest, name);
    if (kept !== undefined && named !== undefined) return { ...kept, descriptor: named.manifest, name, fetchLayer };
    const known = content.records.resolved.get(key);
    const stored = known === undefined ? undefined : await readStored(content, known.descriptor, name);
    if (stored !== undefined && known !== undefined) return { ...stored, descriptor: known.descriptor, name, fetchLayer };
    if (options.mode === 'local') {
      throw new KilnError(ERROR_CODES.IMAGE, `${name} (${formatPlatform(platform)}) has not been pulled into kiln's store, and image.resolvemode=local never pulls`, options.site);
    }
  }

  const registry = await images.registry();
  const resolved = await registry.resolve(ref, { platform, signal });
  await content.write(resolved.bytes, { digest: resolved.descriptor.digest, size: resolved.descriptor.size, what: `manifest of ${name}` });
  const manifest = resolved.manifest;
  await registry.fetchBlob(ref, manifest.config, content, signal);
  const config = await readConfig(content, manifest, name);
  content.records.resolved.put(key, { descriptor: resolved.descriptor });
  return { descriptor: resolved.descriptor, manifest, config, name, fetchLayer };
}

/** The manifest and config of a stored manifest, or undefined when either is missing. */
async function readStored(content: ContentStore, descriptor: Descriptor, name: string): Promise<{ manifest: ImageManifest; config: ImageConfig } | undefined> {
  if (!(await content.has(descriptor.digest))) return undefined;
  const manifest = await content.readJson<ImageManifest>(descriptor.digest);
  if (!(await content.has(manifest.config.digest))) return undefined;
  return { manifest, config: await readConfig(content, manifest, name) };
}

/** Reads a manifest's config and checks that it lists one diff_id per layer. */
async function readConfig(content: ContentStore, manifest: ImageManifest, name: string): Promise<ImageConfig> {
  const config = await content.readJson<ImageConfig>(manifest.config.digest);
  const problem = configLayersProblem(manifest, config);
  if (problem !== undefined) throw new KilnError(ERROR_CODES.IMAGE, `${name}: ${problem}`);
  return config;
}

function withSite(err: unknown, site: SourceSite): unknown {
  if (err instanceof KilnError && err.op === undefined) return new KilnError(err.code, err.message, { ...site, cause: err });
  return err;
}
