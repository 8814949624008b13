/**
 * The `rawjson` progress mode: one JSON object per line per event, for tools
 * and tests that read progress as data.
 */
import type { ProgressEvent, ProgressSink } from './types.js';

/**
 * Writes each event as one JSON line holding exactly the event's own fields
 * (and `type`), in a fixed order, so the output does not depend on how the
 * producer built the object.
 */
export function createRawJsonRenderer(out: NodeJS.WritableStream): ProgressSink & { close(): Promise<void> } {
  let closed = false;
  return {
    emit(event) {
      const line = closed ? undefined : fields(event);
      if (line !== undefined) out.write(`${JSON.stringify(line)}\n`);
    },
    close() {
      closed = true;
      // An empty write's callback fires once everything written before it is flushed.
      return new Promise((resolve) => out.write('', () => resolve()));
    },
  };
}

function fields(event: ProgressEvent): Record<string, unknown> | undefined {
  switch (event.type) {
    case 'vertex': {
      const { type, digest, name, inputs, started, completed, cached, error, reason, progressGroup } = event;
      return { type, digest, name, inputs, started, completed, cached, error, reason, progressGroup };
    }
    case 'log': {
      const { type, vertex, stream, data, timestamp } = event;
      return { type, vertex, stream, data, timestamp };
    }
    case 'status': {
      const { type, vertex, id, current, total, unit, started, completed } = event;
      return { type, vertex, id, current, total, unit, started, completed };
    }
    case 'export': {
      const { type, output, name, started, completed, error, digest } = event;
      return { type, output, name, started, completed, error, digest };
    }
    case 'export-status': {
      const { type, output, id, current, total, completed } = event;
      return { type, output, id, current, total, completed };
    }
    case 'warning': {
      const { type, message, timestamp } = event;
      return { type, message, timestamp };
    }
    default:
      // A new event type fails to compile here; at run time an unknown one is skipped.
      event satisfies never;
      return undefined;
  }
}
