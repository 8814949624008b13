/** `kiln llb convert FILE|- --to json|pb|dump [--out FILE]`: a definition from one form to another, nothing built. */
import { readFile, writeFile } from 'node:fs/promises';
import { buffer } from 'node:stream/consumers';
import { ERROR_CODES, KilnError } from '../errors.js';
import { convertDefinition, type DefinitionFormat, readAnyDefinition } from '../llb/formats.js';

interface ConvertOptions {
  readonly to: DefinitionFormat;
  readonly format?: DefinitionFormat;
  readonly out?: string;
}

/** Runs `kiln llb convert`. Throws KilnErrors for main to render. */
export async function llbConvertCommand(file: string, options: ConvertOptions): Promise<void> {
  let bytes: Uint8Array;
  try {
    bytes = file === '-' ? await buffer(process.stdin) : await readFile(file);
  } catch (err) {
    throw new KilnError(ERROR_CODES.DEFINITION_READ, `cannot read definition ${file}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const read = { file, ...(options.format === undefined ? {} : { format: options.format }) };
  const out = convertDefinition(bytes, options.to, read);
  if (options.to !== 'json' && readAnyDefinition(bytes, read).format === 'json' && hasImageConfig(bytes)) {
    // Said, not silently dropped: a frontend returns the image config beside the Definition.
    process.stderr.write(`note: ${file}'s "image" config has no place in a pb.Definition and was not written; pass it to kiln build with --image-config as an OCI image config\n`);
  }
  if (options.out === undefined) {
    if (options.to === 'pb' && process.stdout.isTTY) throw new KilnError(ERROR_CODES.USAGE, 'refusing to write a binary pb.Definition to a terminal; use --out FILE or a pipe');
    await new Promise<void>((resolve, reject) => process.stdout.write(out, (err) => (err ? reject(err) : resolve())));
    return;
  }
  await writeFile(options.out, out);
}

function hasImageConfig(bytes: Uint8Array): boolean {
  try {
    const json = JSON.parse(new TextDecoder().decode(bytes).replace(/^\uFEFF/, '')) as { image?: unknown };
    return json.image !== undefined;
  } catch {
    return false;
  }
}
