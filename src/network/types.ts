/**
 * The network seam: what a worker's sandboxed containers get for a network.
 * A provider is chosen per session (`--network-provider`, as buildkitd's
 * `--oci-worker-net`): `cni` gives each container its own namespace on a
 * bridge with egress, `host` the host's network, `none` loopback only;
 * `auto` is `cni` where the plugins and iptables are usable, else `none`
 * with the reason. Executors never see a provider: an exec op takes a
 * namespace from it and hands the executor the namespace's path.
 */

/** What the user chooses. */
export type NetworkProviderChoice = 'auto' | 'cni' | 'host' | 'none';

export const NETWORK_PROVIDER_CHOICES: readonly NetworkProviderChoice[] = ['auto', 'cni', 'host', 'none'];

/** What a provider is, once chosen: for `kiln workers` and for errors. */
export interface NetworkStatus {
  readonly provider: 'cni' | 'host' | 'none';
  /** One line: the network and subnet, or why there is none. */
  readonly detail: string;
  /** Set when `auto` found CNI unusable: why sandboxed containers have loopback only. */
  readonly unavailable?: string;
}

/** A network namespace lent to one container. */
export interface NetworkLease {
  /** The nsfs file the container's runtime joins. */
  readonly namespacePath: string;
  /** The file bound at the container's /etc/resolv.conf. */
  readonly resolvConfPath: string;
  /** The address the container has (for logs and tests). */
  readonly address: string;
  /**
   * Gives the namespace back. `reusable`: the process could not have changed
   * the namespace (no CAP_NET_ADMIN), so it may serve another container.
   * Never throws; teardown that takes time finishes in the background (and
   * before the provider closes).
   */
  release(options: { readonly reusable: boolean }): void;
}

/** What a sandboxed container runs in. */
export type SandboxNetwork =
  | { readonly kind: 'namespace'; readonly lease: NetworkLease }
  | { readonly kind: 'host' }
  | { readonly kind: 'loopback'; readonly unavailable?: string };

export interface NetworkProvider {
  /** Chooses (detecting CNI for `auto`) and says what sandboxed containers get. */
  status(): Promise<NetworkStatus>;
  /** The network of one sandboxed container; a namespace must be released. */
  acquire(signal?: AbortSignal): Promise<SandboxNetwork>;
  /** Starts making up to `count` namespaces ahead, so that exec ops do not wait for CNI. */
  prewarm(count: number): void;
  /** Tears down every namespace this provider made (CNI DEL, unmount). */
  close(): Promise<void>;
}
