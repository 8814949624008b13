import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { extract } from 'tar-stream';
import { ERROR_CODES, KilnError } from '../../../src/errors.js';
import { exportTar } from '../../../src/exporter/tar.js';
import { BINARY_XATTR, describeTree, LONG_NAME, makeRichTree, tempDir } from '../../support/tree-fixture.js';

/** Extracts with GNU tar as root: owners, modes, xattrs and times restored. */
async function gnuExtract(archive: string, into: string): Promise<void> {
  await fs.mkdir(into);
  await execa('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-xpf', archive, '-C', into]);
}

describe('exportTar', () => {
  let work: string;
  let src: string;
  let archive: string;
  let server: net.Server;
  before(async () => {
    work = await tempDir();
    src = path.join(work, 'src');
    await fs.mkdir(src);
    await makeRichTree(src);
    // A socket in the tree: tar has no representation for one, so it is left out.
    server = net.createServer();
    await new Promise<void>((resolve) => server.listen(path.join(src, 'a', 'socket'), resolve));
    archive = path.join(work, 'out', 'rich.tar');
    await fs.mkdir(path.dirname(archive));
    await exportTar(src, archive);
  });
  after(async () => {
    await new Promise((resolve) => server.close(resolve));
    await fs.rm(work, { recursive: true, force: true });
  });

  it('lists sorted entries of every kind in GNU tar', async () => {
    const { stdout } = await execa('tar', ['--numeric-owner', '-tvf', archive]);
    const lines = stdout.split('\n');
    const names = lines.map((line) => line.replace(/^.*? \d\d:\d\d /, '').replace(/ (->|link to) .*$/, ''));
    const expected = [
      'a/', 'a/file.txt', 'a/hardlink', 'a/sub/', 'a/sub/empty', 'big-ids', 'big.bin', 'dangling', 'deep/', LONG_NAME,
      'fifo', 'link', 'long-link', 'null-device', 'setuid-tool', 'shared/', 'ünïcödé.txt',
    ];
    assert.deepEqual(names, expected);
    const line = (name: string): string => lines[expected.indexOf(name)] ?? '';
    assert.match(line('a/'), /^drwxr-x--- 1000\/1001 /);
    assert.match(line('a/file.txt'), /^-rw-r----- 1234\/5678 +11 /);
    assert.match(line('a/hardlink'), /^hrw-r----- 1234\/5678 .* link to a\/file\.txt$/);
    assert.match(line('link'), /^lrwxrwxrwx 42\/43 .* -> a\/file\.txt$/);
    assert.match(line('setuid-tool'), /^-rwsr-xr-x /);
    assert.match(line('shared/'), /^drwxrwxrwt /);
    assert.match(line('fifo'), /^prw-r--r-- /);
    assert.match(line('null-device'), /^crw-r--r-- 0\/0 +1,3 /);
    assert.match(line('big-ids'), /^-rw-r--r-- 3000000\/4000000 /);
    assert.match(line('long-link'), new RegExp(`-> ${'t'.repeat(150)}/target$`));
  });

  it('extracts with GNU tar to the same modes, owners, ns mtimes, xattrs and hardlinks', async () => {
    const out = path.join(work, 'extracted');
    await gnuExtract(archive, out);
    const expected = await describeTree(src);
    expected.delete('a/socket');
    assert.deepEqual(await describeTree(out), expected);
    // The binary xattr survived byte for byte (pax values are bytes, not text).
    assert.equal(expected.get('a/file.txt')?.xattrs['user.kiln.binary'], Buffer.from(BINARY_XATTR).toString('hex'));
  });

  it('is byte-for-byte the same for the same tree', async () => {
    const again = path.join(work, 'out', 'again.tar');
    await exportTar(src, again);
    assert.deepEqual(await fs.readFile(again), await fs.readFile(archive));
  });

  it('writes to a stream at the pace of its consumer, and ends it', async () => {
    const chunks: Buffer[] = [];
    let bufferedWhileStalled = -1;
    const stalling = new Writable({
      highWaterMark: 16 * 1024,
      write(chunk: Buffer, _encoding, done) {
        chunks.push(chunk);
        if (bufferedWhileStalled !== -1) return done();
        // Hold the first write: an exporter that ignored backpressure would pile the whole archive up meanwhile.
        setTimeout(() => {
          bufferedWhileStalled = this.writableLength;
          done();
        }, 100);
      },
    });
    await exportTar(src, stalling);
    assert.ok(stalling.writableFinished, 'the stream is ended after the archive');
    assert.ok(bufferedWhileStalled < 256 * 1024, `only about a high-water mark was queued, not the 1 MiB archive (${bufferedWhileStalled} bytes)`);
    assert.deepEqual(Buffer.concat(chunks), await fs.readFile(archive));
  });

  it('streams into GNU tar reading stdin', async () => {
    const out = path.join(work, 'from-stdin');
    await fs.mkdir(out);
    const child = execa('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-xpf', '-', '-C', out], { stdin: 'pipe' });
    await exportTar(src, child.stdin);
    await child;
    const expected = await describeTree(src);
    expected.delete('a/socket');
    assert.deepEqual(await describeTree(out), expected);
  });

  it('writes pax records that a second reader (tar-stream) agrees with', async () => {
    const headers = new Map<string, { type: string | null | undefined; pax: Record<string, string> | null }>();
    const reader = extract();
    reader.on('entry', (header, stream, next) => {
      headers.set(header.name, { type: header.type, pax: (header as { pax?: Record<string, string> | null }).pax ?? null });
      stream.resume();
      stream.on('end', next);
    });
    const parsed = new Promise<void>((resolve, reject) => reader.on('finish', () => resolve()).on('error', reject));
    const tee = new PassThrough();
    tee.pipe(reader);
    await exportTar(src, tee);
    await parsed;
    assert.equal(headers.get(LONG_NAME)?.type, 'file');
    assert.equal(headers.get('ünïcödé.txt')?.type, 'file');
    assert.equal(headers.get('a/file.txt')?.pax?.mtime, '1600000000.123456789');
    assert.equal(headers.get('a/file.txt')?.pax?.['SCHILY.xattr.user.kiln.text'], 'some text');
  });

  it('replaces an existing archive only once the new one is complete', async () => {
    const dest = path.join(work, 'out', 'kept.tar');
    await fs.writeFile(dest, 'previous archive');
    const missing = path.join(work, 'no-such-dir');
    await assert.rejects(exportTar(missing, dest), (err: unknown) => err instanceof KilnError && err.code === ERROR_CODES.OUTPUT && err.message.includes(missing));
    assert.equal(await fs.readFile(dest, 'utf8'), 'previous archive');
    assert.deepEqual((await fs.readdir(path.dirname(dest))).filter((name) => name.includes('.kiln-')), []);
    await exportTar(src, dest);
    assert.deepEqual(await fs.readFile(dest), await fs.readFile(archive));
  });

  it('rejects with the abort reason and leaves no file', async () => {
    const dest = path.join(work, 'out', 'cancelled.tar');
    const reason = new Error('stop');
    await assert.rejects(exportTar(src, dest, { signal: AbortSignal.abort(reason) }), (err: unknown) => err === reason);
    assert.deepEqual((await fs.readdir(path.dirname(dest))).filter((name) => name.startsWith('.cancelled') || name === 'cancelled.tar'), []);
  });
});
