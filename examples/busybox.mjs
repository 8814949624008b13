// A busybox rootfs built from nothing but the host's static busybox
// (Debian's busybox-static puts it at /bin/busybox): the base the other
// examples run their commands on. Shared by build-rootfs.mjs and
// progress-consumer.mjs.
import { copy, DefinitionBuilder, mkdir } from 'kiln';

/** The host directory that holds `busybox`, bound to the `tools` local source. */
export const TOOLS_DIR = '/bin';

/**
 * Adds the ops of a busybox rootfs to `b` and returns its handle: /bin/busybox
 * copied from the `tools` local source, then `busybox --install -s /bin`.
 * @param {DefinitionBuilder} b
 */
export function busyboxRootfs(b) {
  const tools = b.local('tools', { includePatterns: ['busybox'] });
  const bin = b.file('busybox-bin', [mkdir('/bin', { mode: '0755' }), copy(tools, '/busybox', '/bin/busybox', { mode: '0755', followSymlink: true })]);
  return b
    .exec('install', {
      args: ['/bin/busybox', '--install', '-s', '/bin'],
      mounts: [{ dest: '/', input: bin }],
      customName: 'busybox --install -s /bin',
    })
    .output('/');
}
