/** `kiln images` and `kiln images rm NAME...`: the images `type=image` outputs keep. */
import { Session } from '../client/session.js';
import { checkGlobalOptions, type GlobalOptions, sessionOptions } from './global-options.js';
import { formatBytes } from './options.js';

/** Lists the kept images: name, manifest digest, size of their blobs, when kept. */
export async function imagesCommand(options: GlobalOptions): Promise<void> {
  checkGlobalOptions(options);
  await using session = await Session.open(sessionOptions(options));
  const images = [...session.images()].sort((a, b) => a.name.localeCompare(b.name));
  const width = Math.max(4, ...images.map((i) => i.name.length));
  const out = [`${'NAME'.padEnd(width)}  ${'DIGEST'.padEnd(71)}  ${'SIZE'.padEnd(10)}  CREATED`];
  for (const i of images) out.push(`${i.name.padEnd(width)}  ${i.manifest.digest.padEnd(71)}  ${formatBytes(i.size).padEnd(10)}  ${new Date(i.createdAt).toISOString()}`);
  process.stdout.write(`${out.join('\n')}\n`);
}

/** Forgets each named image (its blobs go at the next prune, unless something else keeps them). */
export async function imagesRmCommand(names: readonly string[], options: GlobalOptions): Promise<void> {
  checkGlobalOptions(options);
  await using session = await Session.open(sessionOptions(options));
  for (const name of names) {
    const removed = session.removeImage(name);
    process.stdout.write(`Untagged: ${removed.name} (${removed.manifest.digest})\n`);
  }
}
