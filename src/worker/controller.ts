/**
 * The worker controller: worker initializers are registered with a priority,
 * every one is tried at start, and the default is the available worker with
 * the lowest priority number. Constraints from ops filter workers first.
 */
import { ERROR_CODES, KilnError } from '../errors.js';
import type { Worker } from './types.js';

/** Builds a worker, or throws to say why it is unavailable here. */
export type WorkerInitializer = () => Promise<Worker>;

export interface WorkerRegistration {
  readonly id: string;
  /** Lower wins. */
  readonly priority: number;
  readonly init: WorkerInitializer;
}

/** One registered worker after start: available with its record, or not with the reason. */
export type WorkerStatus =
  | { readonly id: string; readonly priority: number; readonly available: true; readonly worker: Worker }
  | { readonly id: string; readonly priority: number; readonly available: false; readonly reason: string };

/** The workers of one kiln process. */
export class WorkerController {
  readonly #statuses: readonly WorkerStatus[];

  private constructor(statuses: readonly WorkerStatus[]) {
    this.#statuses = [...statuses].sort((a, b) => a.priority - b.priority);
  }

  /** Runs every initializer (concurrently) and records which workers are available. */
  static async start(registrations: readonly WorkerRegistration[]): Promise<WorkerController> {
    const statuses = await Promise.all(
      registrations.map(async (r): Promise<WorkerStatus> => {
        try {
          return { id: r.id, priority: r.priority, available: true, worker: await r.init() };
        } catch (err) {
          return { id: r.id, priority: r.priority, available: false, reason: err instanceof Error ? err.message : String(err) };
        }
      }),
    );
    return new WorkerController(statuses);
  }

  /** Every registered worker, by priority. */
  get statuses(): readonly WorkerStatus[] {
    return this.#statuses;
  }

  /** The default worker: the available one with the lowest priority number. */
  defaultWorker(): Worker {
    return this.select({});
  }

  /**
   * Picks a worker: by id when given, else the first available one (by
   * priority) that satisfies every constraint.
   */
  select(options: { readonly id?: string; readonly constraints?: readonly string[] }): Worker {
    const rejected: string[] = [];
    for (const status of this.#statuses) {
      if (!status.available) {
        rejected.push(`${status.id}: unavailable (${status.reason})`);
        continue;
      }
      if (options.id !== undefined && status.id !== options.id) {
        rejected.push(`${status.id}: not the requested worker`);
        continue;
      }
      const failed = (options.constraints ?? []).find((c) => !constraintHolds(status.worker, c));
      if (failed !== undefined) {
        rejected.push(`${status.id}: constraint ${failed} does not hold`);
        continue;
      }
      return status.worker;
    }
    const wanted = options.id === undefined ? 'no worker available' : `worker "${options.id}" is not available`;
    throw new KilnError(ERROR_CODES.NO_WORKER, `${wanted}: ${rejected.join('; ') || 'no workers registered'}`);
  }

  /** Releases every available worker's resources (a cache shared by several workers is closed once). */
  async close(): Promise<void> {
    const workers = this.#statuses.flatMap((s) => (s.available ? [s.worker] : []));
    await Promise.all(workers.map((w) => w.executor?.close?.()));
    await Promise.all([...new Set(workers.map((w) => w.cache))].map((cache) => cache.close()));
  }
}

/** Evaluates one `FIELD==VALUE` / `FIELD!=VALUE` constraint against a worker. */
export function constraintHolds(worker: Worker, constraint: string): boolean {
  const match = /^([^=!]+)(==|!=)(.*)$/.exec(constraint);
  if (match === null) return false;
  const [, field = '', operator, value] = match;
  const actual = workerField(worker, field);
  const equal = actual !== undefined && (Array.isArray(actual) ? actual.includes(value ?? '') : actual === value);
  return operator === '==' ? equal : !equal;
}

function workerField(worker: Worker, field: string): string | readonly string[] | undefined {
  if (field.startsWith('labels.')) return worker.labels[field.slice('labels.'.length)];
  switch (field) {
    case 'id':
      return worker.id;
    case 'executor':
      return worker.executor?.name ?? 'none';
    case 'snapshotter':
      return worker.snapshotter;
    case 'platform':
      return worker.platforms.map((p) => [p.os, p.architecture, p.variant].filter((s) => s !== '').join('/'));
    default:
      return undefined;
  }
}
