/**
 * The whole output of each step, beside progress: the live stream clips a
 * chatty step (its `log` events stop at a limit), while a store of full
 * logs (the build history) takes every byte. Secrets are masked before
 * anything reaches either.
 */
import type { Writable } from 'node:stream';

/** Where the full output of a build's steps goes. */
export interface StepLogs {
  /**
   * The stream for the output of one run of vertex `digest` (stdout and
   * stderr interleaved, as they came). The writer honours its backpressure
   * (waits for `drain`) so memory stays bounded, and ends it once.
   */
  open(digest: string): Writable;
}
