import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeTarHeader, type TarHeader, writeUstarHeader } from '../../../src/fs/tar-header.js';

const S = 1_000_000_000n;

const base: TarHeader = { name: 'usr/bin/tool', type: 'file', mode: 0o755, uid: 0, gid: 0, size: 1234n, mtimeNs: 1_700_000_000n * S };

describe('writeUstarHeader', () => {
  it('writes the bytes encodeTarHeader gives, wherever ustar holds the entry', () => {
    const long = `${'d'.repeat(150)}/${'f'.repeat(99)}`;
    const headers: TarHeader[] = [
      base,
      { ...base, type: 'dir', name: 'etc', size: 0n, mode: 0o1777 },
      { ...base, type: 'symlink', name: 'lib', linkname: 'usr/lib', size: 0n },
      { ...base, type: 'hardlink', name: 'bin/b', linkname: 'bin/a', size: 0n },
      { ...base, type: 'char', name: 'dev/null', size: 0n, devmajor: 1, devminor: 3 },
      { ...base, type: 'fifo', name: 'run/pipe', size: 0n, mode: 0o4755 },
      { ...base, name: long, uid: 2_097_151, gid: 65534, size: 8n ** 11n - 1n, mtimeNs: (8n ** 11n - 1n) * S },
      { ...base, mtimeNs: 0n, size: 0n },
    ];
    for (const header of headers) {
      const target = Buffer.alloc(1024, 0xee);
      assert.equal(writeUstarHeader(header, target, 512), true, header.name);
      assert.deepEqual(target.subarray(512), encodeTarHeader(header), header.name);
      assert.deepEqual(target.subarray(0, 512), Buffer.alloc(512, 0xee), 'nothing before the offset is touched');
    }
  });

  it('writes nothing and says so where a pax record is needed', () => {
    const headers: TarHeader[] = [
      { ...base, mtimeNs: base.mtimeNs + 1n },
      { ...base, mtimeNs: -S },
      { ...base, mtimeNs: 8n ** 11n * S },
      { ...base, size: 8n ** 11n },
      { ...base, uid: 2_097_152 },
      { ...base, gid: -1 },
      { ...base, name: 'caf\u00e9' },
      { ...base, name: 'x'.repeat(101) },
      { ...base, type: 'symlink', size: 0n, linkname: 'l'.repeat(101) },
      { ...base, xattrs: [['user.a', Buffer.from('b')]] },
    ];
    for (const header of headers) {
      const target = Buffer.alloc(512, 0xee);
      assert.equal(writeUstarHeader(header, target, 0), false, JSON.stringify(header, (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v)));
      assert.deepEqual(target, Buffer.alloc(512, 0xee));
      assert.ok(encodeTarHeader(header).length > 512);
    }
  });
});
