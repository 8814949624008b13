#!/usr/bin/env node
// A progress consumer of one's own: progress is a stream of typed events
// (vertex, log, status, export, export-status), so a program can show it in
// any form. This one prints one line per step when it ends, with how long
// it took and how many lines it printed, then a table of the slowest steps.
//
//   node examples/progress-consumer.mjs
//
// kiln's state goes to $KILN_ROOT (default: kiln's default root). Needs
// root and runc (it runs commands in a busybox rootfs).
import { defaultRoot, DefinitionBuilder, Session, solve } from 'kiln';
import { busyboxRootfs, TOOLS_DIR } from './busybox.mjs';

/** A ProgressSink: `emit` is called for every event, must not throw, and should be cheap. */
function stepTimer() {
  const steps = new Map();
  const step = (digest) => {
    let s = steps.get(digest);
    if (s === undefined) steps.set(digest, (s = { name: digest, lines: 0, ms: 0, outcome: 'running' }));
    return s;
  };
  return {
    steps,
    emit(event) {
      switch (event.type) {
        case 'vertex': {
          const s = step(event.digest);
          s.name = event.name;
          if (event.completed !== undefined && s.outcome === 'running') {
            s.ms = Date.parse(event.completed) - Date.parse(event.started ?? event.completed);
            s.outcome = event.error !== undefined ? `failed: ${event.error}` : event.cached ? 'cached' : 'ran';
            console.log(`step ${JSON.stringify(s.name)} ${s.outcome} in ${s.ms} ms, ${s.lines} lines of output`);
          }
          break;
        }
        case 'log':
          step(event.vertex).lines += event.data.split('\n').length - 1;
          break;
        default:
          // status, export and export-status events: not counted here.
          break;
      }
    },
  };
}

const b = new DefinitionBuilder();
const base = busyboxRootfs(b);
const counted = b
  .exec('count', {
    args: ['/bin/sh', '-c', 'for i in 1 2 3 4 5; do echo "counting $i"; done'],
    mounts: [{ dest: '/', input: base }],
    customName: 'count to five',
  })
  .output('/');

const timer = stepTimer();
const session = await Session.open({ root: process.env.KILN_ROOT ?? defaultRoot() });
try {
  // noCache reruns the op named even when it is cached, so there is always output to count.
  const result = await solve(session, b.build(counted), { locals: { tools: TOOLS_DIR }, progress: timer, noCache: ['count'] });
  await result.release();
} finally {
  await session.close();
}
const slowest = [...timer.steps.values()].sort((x, y) => y.ms - x.ms).slice(0, 3);
console.log('slowest steps:');
for (const s of slowest) console.log(`  ${String(s.ms).padStart(6)} ms  ${s.name}`);
