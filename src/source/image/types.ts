/**
 * What image sources need from the build: kiln's content store, the registry
 * client (made at first use, so builds without images never load it), and the
 * OCI layout directories the caller bound (`--oci-layout NAME=DIR`).
 */
import type { ContentStore } from '../../content/store.js';
import type { RegistryClient } from '../../content/registry/client.js';
import type { Descriptor, ImageConfig, ImageManifest } from '../../content/types.js';

export interface ImageContext {
  readonly content: ContentStore;
  registry(): Promise<RegistryClient>;
  /** `oci-layout://NAME` bindings: NAME → directory. */
  readonly ociLayouts: ReadonlyMap<string, string>;
  /** Image sources resolved in this build, by op name (the image exporter reads its base's config here). */
  readonly resolved: Map<string, Promise<ResolvedImage>>;
}

/** An image resolved to one platform's manifest, whose manifest and config are in the content store. */
export interface ResolvedImage {
  /** The platform manifest's descriptor: its digest is the source's cache key. */
  readonly descriptor: Descriptor;
  readonly manifest: ImageManifest;
  readonly config: ImageConfig;
  /** Where the image came from, for messages and history (e.g. `docker.io/library/alpine:3.20`). */
  readonly name: string;
  /** Puts one layer blob of the manifest into the content store (a no-op when it is there). */
  fetchLayer(layer: Descriptor, signal: AbortSignal): Promise<void>;
}
