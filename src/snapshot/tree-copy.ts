/**
 * Copying trees between snapshots while keeping everything a filesystem
 * layer holds: owners, modes, nanosecond times, xattrs, hardlinks, devices.
 * GNU cp and tar do this exactly (utimensat, lchown, xattr and hardlink
 * tracking); doing it file by file from Node would lose nanoseconds and cost
 * far more.
 */
import { run, runPiped } from './command.js';

/**
 * Copies the content of `src` into the existing directory `dest` with
 * `cp -a`, using reflinks where the filesystem has them (btrfs, xfs): then a
 * copy costs metadata only.
 */
export async function copyTree(src: string, dest: string): Promise<void> {
  await run(`cannot copy ${src} to ${dest}`, { file: 'cp', args: ['-a', '--reflink=auto', '--', `${src}/.`, dest] });
}

/**
 * Copies the entries `rels` (relative paths, each with its ancestors, parents
 * first) of `src` into `dest`, without recursing into directories: a
 * directory listed brings its own metadata, not its content. Existing files
 * are replaced (never written through, so their other hardlinks keep their
 * content); existing directories get the metadata of `src`'s.
 */
export async function copyEntries(src: string, dest: string, rels: readonly string[]): Promise<void> {
  if (rels.length === 0) return;
  // The list goes NUL-separated on stdin, so no name can be taken as an option.
  const list = `${rels.join('\0')}\0`;
  const xattrs = ['--xattrs', '--xattrs-include=*', '--numeric-owner'];
  await runPiped(
    `cannot copy ${rels.length} entries from ${src} to ${dest}`,
    {
      file: 'tar',
      args: ['--create', '--file=-', '--no-recursion', '--null', '--files-from=-', '--format=posix', ...xattrs],
      cwd: src,
      input: list,
    },
    {
      file: 'tar',
      args: ['--extract', '--file=-', ...xattrs, '--same-owner', '--same-permissions', '--warning=no-timestamp'],
      cwd: dest,
    },
  );
}
