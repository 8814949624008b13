/**
 * BuildKit's pb.Definition through the CLI: dockerfile2llb-shaped fixtures
 * built from a file and from stdin (told apart by content), FROM an image in
 * a local registry with cache, tmpfs and secret mounts, COPY --from with
 * names, proxy env; `kiln llb convert` round trips; progress shows
 * BuildKit's digests; an unreadable file names the forms tried.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { lstat, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type sha256 } from '../../src/digest.js';
import { copy, DefinitionBuilder } from '../../src/llb/builder.js';
import { definitionToPb } from '../../src/llb/formats.js';
import { decodeDefinition } from '../../src/llb/pb-convert.js';
import { decodePb, encodePb } from '../../src/llb/pb-wire.js';
import { imageFixture } from '../support/pb-fixtures.js';
import { startRegistry } from '../support/registry.js';
import { EXAMPLES, FIXTURES, kiln, removeDir, tempDir, vertices } from './harness.js';

const COPY_PB = join(FIXTURES, 'pb', 'copy.pb');

async function stat(p: string): Promise<{ mode: string; uid: number; gid: number }> {
  const s = await lstat(p);
  return { mode: (s.mode & 0o7777).toString(8), uid: s.uid, gid: s.gid };
}

describe('pb.Definition in and out through the CLI', () => {
  let work: string;
  let context: string;

  before(async () => {
    work = await tempDir('pb');
    context = join(work, 'context');
    await mkdir(join(context, 'dir', 'sub'), { recursive: true });
    await writeFile(join(context, 'dir', 'f'), 'f\n');
    await writeFile(join(context, 'dir', 'sub', 'g'), 'g\n');
    for (const name of ['a.txt', 'b.txt', 'skip1.txt', 'junk.tmp']) await writeFile(join(context, name), `${name}\n`);
  });
  after(async () => removeDir(work));

  test('builds copy.pb (COPY --chown/--chmod, a wildcard, excludes, COPY --link as a merge) with BuildKit digests in progress', async () => {
    const out = join(work, 'copy-out');
    const r = await kiln(['build', COPY_PB, '--root', join(work, 'root'), '--local', `context=${context}`, '--progress', 'rawjson', '-o', `type=local,dest=${out}`]);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.deepEqual(await stat(join(out, 'dst', 'dir', 'f')), { mode: '640', uid: 1000, gid: 1000 });
    assert.deepEqual(await stat(join(out, 'dst', 'dir', 'sub', 'g')), { mode: '640', uid: 1000, gid: 1000 });
    assert.equal(await readFile(join(out, 'texts', 'a.txt'), 'utf8'), 'a.txt\n');
    assert.equal(await readFile(join(out, 'texts', 'skip1.txt'), 'utf8'), 'skip1.txt\n');
    await assert.rejects(lstat(join(out, 'texts', 'junk.tmp')), 'not matched');
    assert.equal(await readFile(join(out, 'all', 'b.txt'), 'utf8'), 'b.txt\n');
    await assert.rejects(lstat(join(out, 'all', 'skip1.txt')), 'excluded');
    await assert.rejects(lstat(join(out, 'all', 'dir')), 'excluded');
    await assert.rejects(lstat(join(out, 'all', 'junk.tmp')), 'excluded by the context source');
    assert.deepEqual(await stat(join(out, 'linked', 'a.txt')), { mode: '755', uid: 0, gid: 0 });
    const expected = new Set(decodeDefinition(new Uint8Array(await readFile(COPY_PB))).entries.map((e) => e.digest));
    const shown = [...vertices(r.stderr).keys()];
    assert.ok(shown.length > 0 && shown.every((d) => expected.has(d as ReturnType<typeof sha256>)), `progress digests ${shown.join(', ')}`);
  });

  test('reads a pb.Definition from stdin, told from JSON by its content, and a converted JSON builds the same tree', async () => {
    const root = join(work, 'root');
    const json = join(work, 'copy.json');
    const conv = await kiln(['llb', 'convert', COPY_PB, '--to', 'json', '--out', json]);
    assert.equal(conv.exitCode, 0, conv.stderr);
    const viaStdin = await execa('sh', ['-c', `node "$KILN" build - --root "$ROOT" --local context="$CTX" -o type=tar,dest=- < "$PB" | tar -tvf - | sort`], {
      env: { KILN: join(EXAMPLES, '..', 'bin', 'kiln.js'), ROOT: root, CTX: context, PB: COPY_PB },
      reject: false,
    });
    assert.equal(viaStdin.exitCode, 0, viaStdin.stderr);
    const viaJson = await execa('sh', ['-c', `node "$KILN" build "$JSON" --root "$ROOT" --local context="$CTX" -o type=tar,dest=- | tar -tvf - | sort`], {
      env: { KILN: join(EXAMPLES, '..', 'bin', 'kiln.js'), ROOT: root, CTX: context, JSON: json },
      reject: false,
    });
    assert.equal(viaJson.exitCode, 0, viaJson.stderr);
    assert.equal(viaJson.stdout, viaStdin.stdout);
    assert.match(viaStdin.stdout, /1000\/1000 .* dst\/dir\/f/);
  });

  test('llb convert: pb → json → pb and pb → dump → pb give the same bytes', async () => {
    const original = await readFile(COPY_PB);
    for (const via of ['json', 'dump']) {
      const mid = join(work, `mid.${via}`);
      const back = join(work, `back-${via}.pb`);
      assert.equal((await kiln(['llb', 'convert', COPY_PB, '--to', via, '--out', mid])).exitCode, 0);
      const r = await kiln(['llb', 'convert', mid, '--to', 'pb', '--out', back]);
      assert.equal(r.exitCode, 0, r.stderr);
      assert.deepEqual(await readFile(back), original, `via ${via}`);
    }
  });

  test('an unreadable file names the forms tried and why each failed', async () => {
    const bad = join(work, 'bad.pb');
    await writeFile(bad, Buffer.from([0x0a, 0x03, 0xff, 0x00, 0x13, 0x0a]));
    const r = await kiln(['build', bad, '--root', join(work, 'root')]);
    assert.equal(r.exitCode, 2, r.stderr);
    assert.match(r.stderr, /bad\.pb: \(root\): not a definition kiln reads; tried pb\.Definition \(protobuf\): .* \| JSON LLB: .* \| dump-llb JSON lines: /);
    const forced = await kiln(['build', COPY_PB, '--format', 'json', '--root', join(work, 'root')]);
    assert.equal(forced.exitCode, 2, forced.stderr);
  });

  test('ADD of local archives (tar.xz, tar.gz) unpacks them, a plain gzip is copied, COPY --parents checks its required path', async () => {
    const ctx = join(work, 'add-context');
    const tree = join(work, 'add-tree');
    await mkdir(join(tree, 'app', 'bin'), { recursive: true });
    await writeFile(join(tree, 'app', 'bin', 'run'), 'run\n');
    await mkdir(join(ctx, 'src', 'keep'), { recursive: true });
    await writeFile(join(ctx, 'src', 'keep', 'k'), 'k\n');
    await execa('tar', ['-cJf', join(ctx, 'app.tar.xz'), '--owner=1234', '--group=99', '-C', tree, 'app']);
    await execa('tar', ['-czf', join(ctx, 'more.tar.gz'), '-C', join(tree, 'app'), 'bin']);
    await execa('sh', ['-c', `echo plain | gzip > ${join(ctx, 'notes.gz')}`]);
    const b = new DefinitionBuilder();
    const local = b.local('context', { name: 'context' });
    const add = b.file('add', [
      copy(local, '/app.tar.xz', '/opt/', { attemptUnpack: true, createDestPath: true }),
      copy(local, '/more.tar.gz', '/more', { attemptUnpack: true, createDestPath: true }),
      copy(local, '/notes.gz', '/notes.gz', { attemptUnpack: true }),
      copy(local, '/src', '/parents/', { dirCopyContents: true, createDestPath: true, includePatterns: ['keep'], requiredPaths: ['/src/keep'] }),
    ]);
    const file = join(work, 'add.pb');
    await writeFile(file, definitionToPb(b.build(add)));
    const out = join(work, 'add-out');
    const r = await kiln(['build', file, '--root', join(work, 'root'), '--local', `context=${ctx}`, '-o', `type=local,dest=${out}`]);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(await readFile(join(out, 'opt', 'app', 'bin', 'run'), 'utf8'), 'run\n');
    assert.deepEqual(await stat(join(out, 'opt', 'app', 'bin', 'run')), { mode: '644', uid: 1234, gid: 99 });
    assert.equal(await readFile(join(out, 'more', 'bin', 'run'), 'utf8'), 'run\n');
    await assert.rejects(lstat(join(out, 'app.tar.xz')), 'an archive is unpacked, not copied');
    assert.equal((await execa('sh', ['-c', `gzip -dc < ${join(out, 'notes.gz')}`])).stdout, 'plain');
    assert.equal(await readFile(join(out, 'parents', 'keep', 'k'), 'utf8'), 'k\n');

    const missing = new DefinitionBuilder();
    const again = missing.local('context', { name: 'context' });
    const parents = missing.file('parents', [copy(again, '/src', '/p/', { dirCopyContents: true, createDestPath: true, includePatterns: ['gone'], requiredPaths: ['/src/gone'] })]);
    await writeFile(file, definitionToPb(missing.build(parents)));
    const failed = await kiln(['build', file, '--root', join(work, 'root'), '--local', `context=${ctx}`]);
    assert.equal(failed.exitCode, 1, failed.stderr);
    assert.match(failed.stderr, /the required path "\/src\/gone" is not in the source/);
  });

  test("a failing op with a place in the Definition's source map shows its Dockerfile lines above the error", async () => {
    const b = new DefinitionBuilder();
    const local = b.local('context', { name: 'context' });
    const pb = definitionToPb(b.build(b.file('copy-missing', [copy(local, '/no-such-file', '/dst')])));
    const decoded = decodePb('Definition', pb);
    const fileOp = decodeDefinition(pb).entries.find((e) => e.op['file'] !== undefined);
    assert.ok(fileOp !== undefined);
    const dockerfile = 'FROM scratch\nWORKDIR /app\nCOPY no-such-file /dst\nCMD ["x"]\n';
    const at = { locations: [{ sourceIndex: 0, ranges: [{ start: { line: 3 }, end: { line: 3 } }] }] };
    const withSource = encodePb('Definition', { ...decoded, Source: { locations: { [fileOp.digest]: at }, infos: [{ filename: 'Dockerfile', data: Buffer.from(dockerfile), language: 'Dockerfile' }] } });
    const file = join(work, 'located.pb');
    await writeFile(file, withSource);
    const r = await kiln(['build', file, '--root', join(work, 'root'), '--local', `context=${context}`, '--progress', 'plain']);
    assert.equal(r.exitCode, 1, r.stderr);
    assert.match(r.stderr, /\nDockerfile:3\n-+\n 1 \| FROM scratch\n 2 \| WORKDIR \/app\n 3 \| >>> COPY no-such-file \/dst\n 4 \| CMD \["x"\]\n-+\nerror: /);
  });

  describe('FROM an image in a local registry', () => {
    let registry: Awaited<ReturnType<typeof startRegistry>>;
    let baseRef: string;

    before(async () => {
      registry = await startRegistry();
      baseRef = `${registry.host}/kiln/pb-base:1`;
      // busybox with the /etc/passwd and /etc/group a COPY --chown=nobody:nogroup looks names up in.
      const busybox = JSON.parse(await readFile(join(EXAMPLES, 'busybox.json'), 'utf8')) as { ops: Record<string, unknown> };
      const def = {
        version: 1,
        ops: {
          ...busybox.ops,
          etc: {
            inputs: ['base'],
            file: {
              actions: [
                { input: 0, output: -1, mkdir: { path: '/etc', mode: '0755', makeParents: true } },
                { input: 1, output: -1, mkfile: { path: '/etc/passwd', data: 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' } },
                { input: 2, output: 0, mkfile: { path: '/etc/group', data: 'root:x:0:\nnogroup:x:65534:\n' } },
              ],
            },
          },
        },
        result: 'etc',
      };
      const file = join(work, 'pb-base.json');
      await writeFile(file, JSON.stringify(def));
      const r = await kiln(['build', file, '--root', join(work, 'root'), '--local', 'tools=/bin', '-o', `type=image,name=${baseRef},push=true,registry.insecure=true`]);
      assert.equal(r.exitCode, 0, r.stderr);
    });
    after(async () => registry?.stop());

    test('image.pb shape: RUN with cache, tmpfs and secret mounts, COPY --from --chown by name, USER, proxy env; --image-config for the image', async () => {
      const pb = join(work, 'image.pb');
      await writeFile(pb, imageFixture(`docker-image://${baseRef}`));
      const token = join(work, 'token');
      await writeFile(token, 's3cret');
      const imageConfig = join(work, 'config.json');
      await writeFile(
        imageConfig,
        JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Env: ['FROM_FRONTEND=1'], Cmd: ['/bin/sh'], User: 'nobody' }, rootfs: { type: 'layers', diff_ids: [] } }),
      );
      const out = join(work, 'image-out');
      const oci = join(work, 'image.tar');
      const r = await kiln([
        'build', pb, '--root', join(work, 'root'), '--insecure-registry', registry.host, '--secret', `id=token,src=${token}`,
        '--image-config', imageConfig, '-o', `type=local,dest=${out}`, '-o', `type=oci,dest=${oci}`,
      ]);
      assert.equal(r.exitCode, 0, r.stderr);
      assert.equal(await readFile(join(out, 'out', 'result'), 'utf8'), 'built\n');
      assert.equal(await readFile(join(out, 'out', 'uid'), 'utf8'), '65534\n');
      assert.equal(await readFile(join(out, 'out', 'proxy'), 'utf8'), 'http://127.0.0.1:3128\n');
      assert.deepEqual(await stat(join(out, 'out')), { mode: '755', uid: 65534, gid: 65534 });
      await assert.rejects(lstat(join(out, 'run', 'secrets', 'token')), 'no secret in the result');
      const index = JSON.parse((await execa('tar', ['-xOf', oci, 'index.json'])).stdout) as { manifests: { digest: string }[] };
      const manifest = JSON.parse((await execa('tar', ['-xOf', oci, `blobs/sha256/${index.manifests[0]?.digest.slice(7) ?? ''}`])).stdout) as { config: { digest: string } };
      const config = JSON.parse((await execa('tar', ['-xOf', oci, `blobs/sha256/${manifest.config.digest.slice(7)}`])).stdout) as { config: { Env: string[]; User: string } };
      assert.deepEqual(config.config.Env, ['FROM_FRONTEND=1']);
      assert.equal(config.config.User, 'nobody');
    });
  });
});
