/** `kiln workers`: every registered worker, available or not. */
import { Session, type SnapshotterChoice } from '../client/session.js';
import { checkGlobalOptions, type GlobalOptions, sessionOptions } from './global-options.js';

/** Options of `kiln workers`. */
interface WorkersOptions extends GlobalOptions {
  /** The snapshotter the workers are opened with, as `kiln build --snapshotter` would. */
  readonly snapshotter?: SnapshotterChoice;
}

/** Prints id, priority, default, executor, snapshotter, network provider, platforms, labels and status. */
export async function workersCommand(options: WorkersOptions): Promise<void> {
  checkGlobalOptions(options);
  await using session = await Session.open({ ...sessionOptions(options), ...(options.snapshotter === undefined ? {} : { snapshotter: options.snapshotter }) });
  let defaultId: string | undefined;
  try {
    defaultId = (await session.workers.defaultWorker()).id;
  } catch {
    defaultId = undefined;
  }
  const lines = ['ID\tPRIORITY\tDEFAULT\tEXECUTOR\tSNAPSHOTTER\tNETWORK\tPLATFORMS\tLABELS\tSTATUS'];
  const network = await session.network.status().then(
    (s) => `${s.provider} (${s.detail})`,
    (err: unknown) => `unavailable (${err instanceof Error ? err.message : String(err)})`,
  );
  for (const s of await session.workers.statuses()) {
    // A worker whose executor's setup waits for its first container (see
    // executor/deferred.ts) does it now: its seccomp status, or why it cannot run anything.
    const unprepared = s.available ? await s.worker.executor?.ready?.().then(
      () => undefined,
      (err: unknown) => (err instanceof Error ? err.message : String(err)),
    ) : undefined;
    if (s.available && unprepared === undefined) {
      const w = s.worker;
      const platforms = w.platforms.map((p) => [p.os, p.architecture, p.variant].filter(Boolean).join('/')).join(',');
      const seccomp = w.executor?.seccomp;
      const labels = [
        ...Object.entries(w.labels).map(([k, v]) => `${k}=${v}`),
        // Shown beside the labels, but not one: constraints cannot select on it.
        ...(seccomp === undefined ? [] : [`kiln.seccomp=${seccomp.enabled ? 'on' : `off (${seccomp.reason})`}`]),
      ].join(',');
      lines.push([w.id, s.priority, w.id === defaultId ? 'yes' : 'no', w.executor?.name ?? 'none', w.snapshotter, network, platforms, labels, 'available'].join('\t'));
    } else {
      lines.push([s.id, s.priority, 'no', '-', '-', '-', '-', '-', `unavailable: ${s.available ? unprepared : s.reason}`].join('\t'));
    }
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}
