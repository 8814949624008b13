/**
 * Choosing the manifest for a platform out of an index. Platforms compare on
 * os and architecture, and on the variant when the wanted platform has one
 * (or its architecture has a default: an arm64 image without a variant is a
 * v8 image, so `linux/arm64` and `linux/arm64/v8` are the same platform).
 */
import type { Descriptor, ImagePlatform } from './types.js';
import { isIndexMediaType, isManifestMediaType } from './types.js';

/** Variants an architecture has when a descriptor leaves it out. */
const DEFAULT_VARIANT: Readonly<Record<string, string>> = { arm64: 'v8' };
/** Architecture names some tools write for the names OCI uses. */
const ARCH_ALIASES: Readonly<Record<string, string>> = { x86_64: 'amd64', 'x86-64': 'amd64', aarch64: 'arm64' };

function normalise(platform: ImagePlatform): { os: string; architecture: string; variant: string | undefined } {
  const architecture = ARCH_ALIASES[platform.architecture] ?? platform.architecture;
  return { os: platform.os, architecture, variant: platform.variant ?? DEFAULT_VARIANT[architecture] };
}

/** Whether an image built for `have` runs as `want`. */
export function platformMatches(want: ImagePlatform, have: ImagePlatform): boolean {
  const w = normalise(want);
  const h = normalise(have);
  return w.os === h.os && w.architecture === h.architecture && (w.variant === undefined || w.variant === h.variant);
}

/** `os/arch[/variant]`, the way users write a platform. */
export function formatPlatform(platform: ImagePlatform): string {
  return [platform.os, platform.architecture, platform.variant].filter((s) => s !== undefined && s !== '').join('/');
}

/**
 * The first entry of an index for `want` (an index's order is its
 * preference), or undefined. Entries that are neither manifests nor indexes
 * (attestations stored under other media types) are never chosen.
 */
export function selectPlatform(manifests: readonly Descriptor[], want: ImagePlatform): Descriptor | undefined {
  return manifests.find(
    (d) => d.platform !== undefined && (isManifestMediaType(d.mediaType) || isIndexMediaType(d.mediaType)) && platformMatches(want, d.platform),
  );
}
