#!/usr/bin/env node
// Builds a small root filesystem (busybox, and a file written by a command
// run inside it) and writes it to a directory.
//
//   node examples/build-rootfs.mjs OUT_DIR
//
// kiln's state goes to $KILN_ROOT (default: kiln's default root). Needs root
// and runc, as `kiln build` does.
import { defaultRoot, DefinitionBuilder, exportResult, Session, solve } from 'kiln';
import { busyboxRootfs, TOOLS_DIR } from './busybox.mjs';

const [dest] = process.argv.slice(2);
if (dest === undefined) {
  console.error('usage: node examples/build-rootfs.mjs OUT_DIR');
  process.exit(2);
}

const b = new DefinitionBuilder();
const base = busyboxRootfs(b);
const motd = b
  .exec('motd', {
    args: ['/bin/sh', '-c', 'echo "built by kiln on $(uname -m)" > /etc/motd'],
    mounts: [{ dest: '/', input: base }],
  })
  .output('/');

const session = await Session.open({ root: process.env.KILN_ROOT ?? defaultRoot() });
try {
  const result = await solve(session, b.build(motd), { locals: { tools: TOOLS_DIR } });
  try {
    await exportResult(result, [{ type: 'local', dest }]);
  } finally {
    await result.release();
  }
} finally {
  await session.close();
}
console.log(`rootfs written to ${dest}`);
