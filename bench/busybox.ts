/**
 * What the exec benches share: definitions over the busybox base of
 * llb-examples/busybox.json (built from Debian's static busybox in
 * `--local tools=/bin`), and when each vertex ran, read from `--progress
 * rawjson`.
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { RawDefinition, RawOp } from '../src/llb/json-types.js';
import type { ProcessRun } from './harness.js';

const BUSYBOX_JSON = fileURLToPath(new URL('../../llb-examples/busybox.json', import.meta.url));
/** The busybox the base is built from (`--local tools=/bin`, Debian's static busybox). */
export const TOOLS = '/bin';

/** The op names of llb-examples/busybox.json; its result is `base`. */
export async function baseOps(): Promise<Record<string, RawOp>> {
  return (JSON.parse(await readFile(BUSYBOX_JSON, 'utf8')) as RawDefinition).ops;
}

/** `ops` on top of the busybox base ops. */
export function definition(base: Record<string, RawOp>, ops: Record<string, RawOp>, result: string): RawDefinition {
  return { version: 1, ops: { ...base, ...ops }, result };
}

/** A `sleep SECONDS` on the base (read-only) whose output is an empty scratch mount; `name` sets its env and progress name. */
export function sleepOp(name: string, seconds: string): RawOp {
  return {
    inputs: ['base'],
    exec: {
      meta: { args: ['/bin/sleep', seconds], env: [`STEP=${name}`] },
      mounts: [
        { dest: '/', input: 0, output: -1, readonly: true },
        { dest: '/out', input: -1, output: 0 },
      ],
    },
    metadata: { description: { 'llb.customname': name } },
  };
}

/** When each vertex ran (ms since the epoch), by progress name; cached vertices are left out. */
function vertexTimes(stderr: string): Map<string, { started: number; completed: number }> {
  const times = new Map<string, { started: number; completed: number }>();
  for (const line of stderr.split('\n')) {
    if (!line.startsWith('{')) continue;
    const event = JSON.parse(line) as { type?: string; name?: string; started?: string; completed?: string; cached?: boolean };
    if (event.type !== 'vertex' || event.cached === true || event.name === undefined) continue;
    if (event.started === undefined || event.completed === undefined) continue;
    times.set(event.name, { started: Date.parse(event.started), completed: Date.parse(event.completed) });
  }
  return times;
}

/** The vertices `names` of a run: each one's start and duration, and the span from the first start to the last end (ms). */
export function timesOf(run: ProcessRun, names: readonly string[]): { durations: number[]; starts: number[]; span: number } {
  const times = vertexTimes(run.stderr);
  const picked = names.map((name) => {
    const t = times.get(name);
    if (t === undefined) throw new Error(`"${name}" did not run in the build (cached, or missing from its progress)`);
    return t;
  });
  return {
    durations: picked.map((t) => t.completed - t.started),
    starts: picked.map((t) => t.started),
    span: Math.max(...picked.map((t) => t.completed)) - Math.min(...picked.map((t) => t.started)),
  };
}
