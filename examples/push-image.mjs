#!/usr/bin/env node
// Builds a one-file image and pushes it to the registry named in its
// reference, then prints the manifest digest.
//
//   node examples/push-image.mjs HOST[:PORT]/REPO:TAG [--insecure]
//
// --insecure talks plain HTTP to that registry (a local test registry).
// kiln's state goes to $KILN_ROOT (default: kiln's default root).
import { defaultRoot, DefinitionBuilder, exportResult, mkdir, mkfile, Session, solve } from 'kiln';

const args = process.argv.slice(2);
const name = args.find((a) => !a.startsWith('--'));
if (name === undefined) {
  console.error('usage: node examples/push-image.mjs HOST[:PORT]/REPO:TAG [--insecure]');
  process.exit(2);
}
const insecure = args.includes('--insecure');

const b = new DefinitionBuilder();
const files = b.file('files', [mkdir('/app', { mode: '0755' }), mkfile('/app/hello.txt', 'hello from kiln\n', { mode: '0644' })]);
const definition = b.build(files, { config: { cmd: ['/bin/cat', '/app/hello.txt'], workingDir: '/app', labels: { example: 'push-image' } } });

// The export progress event of the image output carries the manifest digest once it is pushed.
let digest;
const progress = {
  emit(event) {
    if (event.type === 'export' && event.digest !== undefined) digest = event.digest;
  },
};

const session = await Session.open({ root: process.env.KILN_ROOT ?? defaultRoot() });
try {
  const result = await solve(session, definition, { progress, ...(insecure ? { insecureRegistries: [name.split('/')[0]] } : {}) });
  try {
    await exportResult(result, [{ type: 'image', name, push: true, insecure }]);
  } finally {
    await result.release();
  }
} finally {
  await session.close();
}
console.log(`pushed ${name} ${digest}`);
