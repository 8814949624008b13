/**
 * A LIFO stack of releases: what an exec op prepares is pushed as it is
 * made, and released in reverse order, so a mount goes before the snapshot
 * under it. A small stand-in for TC39's AsyncDisposableStack, which Node 20
 * lacks at run time.
 */

/** Something released once, asynchronously (refs, mounted dirs, cache mounts). */
export interface Releasable {
  release(): Promise<void>;
}

/** Releases in reverse order of pushing; each release runs once. */
export class ReleaseStack implements AsyncDisposable {
  readonly #releases: (() => Promise<void>)[] = [];
  #released: Promise<void> | undefined;

  /** Pushes `resource`'s release and returns the resource. */
  use<T extends Releasable>(resource: T): T {
    this.defer(() => resource.release());
    return resource;
  }

  /** Pushes a release. */
  defer(release: () => Promise<void>): void {
    if (this.#released !== undefined) throw new Error('ReleaseStack: pushed to after release');
    this.#releases.push(release);
  }

  /**
   * Runs every release, last pushed first. A failing release does not stop
   * the ones below it; the first failure is thrown once all have run.
   * Later calls wait for the first.
   */
  release(): Promise<void> {
    this.#released ??= this.#unwind();
    return this.#released;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.release();
  }

  async #unwind(): Promise<void> {
    let failed: { readonly err: unknown } | undefined;
    for (let release = this.#releases.pop(); release !== undefined; release = this.#releases.pop()) {
      try {
        await release();
      } catch (err) {
        failed ??= { err };
      }
    }
    if (failed !== undefined) throw failed.err;
  }
}
