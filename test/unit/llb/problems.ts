/**
 * Helpers for the loader tests: small valid definitions to break one field
 * at a time, and assertions on the diagnostics that come back.
 */
import assert from 'node:assert/strict';
import type { Diagnostic } from '../../../src/errors.js';
import { ValidationError } from '../../../src/errors.js';
import { loadDefinition } from '../../../src/llb/load.js';

/** A source op every test definition can use as an input. */
export const IMAGE = { source: { identifier: 'docker-image://alpine:3.20' } };

/** A definition whose result is the op `x`, with `base` (an image) and `extra` ops beside it. */
export function withOp(op: unknown, extra: Record<string, unknown> = {}): unknown {
  return { version: 1, ops: { base: IMAGE, ...extra, x: op }, result: 'x' };
}

/** An exec op over `base` (root mount, output 0) with `exec` fields and `meta` fields merged in. */
export function execOp(exec: Record<string, unknown> = {}, meta: Record<string, unknown> = {}): unknown {
  return {
    inputs: ['base'],
    exec: { meta: { args: ['/bin/true'], ...meta }, mounts: [{ dest: '/', input: 0, output: 0 }], ...exec },
  };
}

/** A file op over `base` with the given actions. */
export function fileOp(...actions: unknown[]): unknown {
  return { inputs: ['base'], file: { actions } };
}

/** The diagnostics loading `json` reports; fails when it loads. */
export function problemsOf(json: unknown): readonly Diagnostic[] {
  try {
    loadDefinition(json);
  } catch (err) {
    if (err instanceof ValidationError) return err.diagnostics;
    throw err;
  }
  return assert.fail('expected a ValidationError, but the definition loaded');
}

/** Asserts loading `json` reports a problem at exactly `path` whose message contains `fragment`. */
export function assertProblem(json: unknown, path: string, fragment: string): void {
  const problems = problemsOf(json);
  assert.ok(
    problems.some((p) => p.path === path && p.message.includes(fragment)),
    `expected ${path}: ...${fragment}..., got:\n${problems.map((p) => `  ${p.path}: ${p.message}`).join('\n')}`,
  );
}
