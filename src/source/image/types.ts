/**
 * What image sources need from the build: kiln's content store and the
 * registry client (made at first use, so builds without images never load it).
 */
import type { ContentStore } from '../../content/store.js';
import type { RegistryClient } from '../../content/registry/client.js';
import type { Descriptor, ImageConfig, ImageManifest } from '../../content/types.js';

export interface ImageContext {
  readonly content: ContentStore;
  registry(): Promise<RegistryClient>;
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
