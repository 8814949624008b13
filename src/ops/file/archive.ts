/**
 * Whether a file a copy with `attemptUnpack` (Dockerfile `ADD` of a local
 * file) would have buildkitd unpack: a tar, plain or compressed. kiln's copy
 * does not unpack yet, so such a file is refused by name; any other file is
 * copied as it is, as buildkitd copies it.
 */
import { open } from 'node:fs/promises';
import { gunzipSync } from 'node:zlib';

const HEADER = 512;
const USTAR_OFFSET = 257;

function isTarHeader(block: Uint8Array): boolean {
  return block.length >= USTAR_OFFSET + 5 && Buffer.from(block.subarray(USTAR_OFFSET, USTAR_OFFSET + 5)).toString('latin1') === 'ustar';
}

/** The first bytes of a gzip stream, decompressed as far as they go. */
function gunzipPrefix(head: Uint8Array): Uint8Array {
  try {
    return gunzipSync(head, { finishFlush: 2 /* Z_SYNC_FLUSH: a truncated stream is not an error */ });
  } catch {
    return new Uint8Array();
  }
}

/**
 * True when `file` is, or may be, an archive buildkitd would unpack: a tar
 * (ustar header), a gzip whose content starts with one, or a bzip2, xz or
 * zstd stream (whose content kiln cannot look into, so it says "may be").
 */
export async function mayBeArchive(file: string): Promise<boolean> {
  const handle = await open(file, 'r');
  try {
    const head = new Uint8Array(64 * 1024);
    const { bytesRead } = await handle.read(head, 0, head.length, 0);
    const bytes = head.subarray(0, bytesRead);
    if (bytes.length < 4) return false;
    if (bytes[0] === 0x1f && bytes[1] === 0x8b) return isTarHeader(gunzipPrefix(bytes).subarray(0, HEADER));
    const magic = Buffer.from(bytes.subarray(0, 6));
    if (magic.subarray(0, 3).toString('latin1') === 'BZh') return true;
    if (magic.equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return true;
    if (magic.subarray(0, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) return true;
    return isTarHeader(bytes.subarray(0, HEADER));
  } finally {
    await handle.close();
  }
}
