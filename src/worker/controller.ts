/**
 * The worker controller: worker initializers are registered with a priority,
 * and the default is the available worker with the lowest priority number.
 * Constraints from ops filter workers first. A worker is initialized when a
 * selection first needs it, in priority order, and only once: a build on the
 * default worker never pays for starting the others (the containerd worker
 * loads a gRPC client and asks containerd for its containers, ~100 ms).
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

/** One registered worker once initialized: available with its record, or not with the reason. */
export type WorkerStatus =
  | { readonly id: string; readonly priority: number; readonly available: true; readonly worker: Worker }
  | { readonly id: string; readonly priority: number; readonly available: false; readonly reason: string };

/** What a selection asks for: a worker by id, and constraints it must meet. */
export interface WorkerQuery {
  readonly id?: string;
  readonly constraints?: readonly string[];
}

/** The workers of one kiln process. */
export class WorkerController {
  readonly #registrations: readonly WorkerRegistration[];
  /** Each worker's initialization, once asked for. */
  readonly #started = new Map<string, Promise<WorkerStatus>>();

  private constructor(registrations: readonly WorkerRegistration[]) {
    this.#registrations = [...registrations].sort((a, b) => a.priority - b.priority);
  }

  /** Registers the workers; none is initialized until a selection needs it. */
  static create(registrations: readonly WorkerRegistration[]): WorkerController {
    return new WorkerController(registrations);
  }

  /** Registers the workers and initializes them all (concurrently). */
  static async start(registrations: readonly WorkerRegistration[]): Promise<WorkerController> {
    const controller = new WorkerController(registrations);
    await controller.statuses();
    return controller;
  }

  /** Every registered worker, by priority, each initialized. */
  statuses(): Promise<WorkerStatus[]> {
    return Promise.all(this.#registrations.map((r) => this.#status(r)));
  }

  /** The default worker: the available one with the lowest priority number. */
  defaultWorker(): Promise<Worker> {
    return this.select({});
  }

  /**
   * Picks a worker: by id when given, else the first available one (by
   * priority) that satisfies every constraint. Workers after the one picked
   * are not initialized.
   */
  async select(query: WorkerQuery): Promise<Worker> {
    if (query.id !== undefined && !this.#registrations.some((r) => r.id === query.id)) {
      const ids = this.#registrations.map((r) => r.id);
      throw new KilnError(ERROR_CODES.NO_WORKER, `no worker has the id "${query.id}" (the workers are ${ids.length === 0 ? 'none' : ids.join(', ')})`);
    }
    const rejected: string[] = [];
    for (const registration of this.#registrations) {
      if (query.id !== undefined && registration.id !== query.id) continue;
      const status = await this.#status(registration);
      if (!status.available) {
        rejected.push(`${status.id}: unavailable (${status.reason})`);
        continue;
      }
      const failed = (query.constraints ?? []).find((c) => !constraintHolds(status.worker, c));
      if (failed !== undefined) {
        rejected.push(`${status.id}: constraint ${failed} does not hold`);
        continue;
      }
      return status.worker;
    }
    const wanted = query.id === undefined ? 'no worker available' : `worker "${query.id}" is not available`;
    throw new KilnError(ERROR_CODES.NO_WORKER, `${wanted}: ${rejected.join('; ') || 'no workers registered'}`);
  }

  /** Releases the resources of every worker initialized and available (a cache shared by several workers is closed once). */
  async close(): Promise<void> {
    const statuses = await Promise.all(this.#started.values());
    const workers = statuses.flatMap((s) => (s.available ? [s.worker] : []));
    await Promise.all(workers.map(async (w) => w.executor?.close?.()));
    await Promise.all([...new Set(workers.map((w) => w.cache))].map((cache) => cache.close()));
  }

  /** The worker's status, initializing it on first use. */
  #status(registration: WorkerRegistration): Promise<WorkerStatus> {
    let started = this.#started.get(registration.id);
    if (started === undefined) {
      started = initialize(registration);
      this.#started.set(registration.id, started);
    }
    return started;
  }
}

async function initialize(r: WorkerRegistration): Promise<WorkerStatus> {
  try {
    return { id: r.id, priority: r.priority, available: true, worker: await r.init() };
  } catch (err) {
    return { id: r.id, priority: r.priority, available: false, reason: err instanceof Error ? err.message : String(err) };
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
