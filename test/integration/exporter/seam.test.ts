/** The exporter seam: finalize steps run after every export, and outputs of one solve share each new layer's export. */
import assert from 'node:assert/strict';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import {
  DEFAULT_EXPORTERS,
  DefinitionBuilder,
  type ExportEvent,
  type Exporter,
  exportResult,
  type ExportStatusEvent,
  mkdir,
  mkfile,
  type ProgressEvent,
  Session,
  solve,
} from '../../../src/index.js';

describe('exporter seam', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-exporters-'));
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  /** A one-layer result, new in a fresh root, and the progress of its solve and exports. */
  async function solved(rootName: string) {
    const session = await Session.open({ root: join(dir, rootName) });
    const b = new DefinitionBuilder();
    const definition = b.build(b.file('app', [mkdir('/app', { mode: 0o755 }), mkfile('/app/hello', `hi from ${rootName}\n`)]));
    const events: ProgressEvent[] = [];
    const result = await solve(session, definition, { progress: { emit: (e) => events.push(e) } });
    return {
      result,
      events,
      session,
      [Symbol.asyncDispose]: async () => {
        await result.release();
        await session.close();
      },
    };
  }

  it("a fake exporter's finalize runs after every output is written, and its output completes after it", async () => {
    await using s = await solved('finalize');
    const calls: string[] = [];
    const fake: Exporter<'image'> = {
      type: 'image',
      async export(result, output) {
        calls.push(`export ${output.name} (${result.ref === null ? 'scratch' : 'ref'})`);
        return {
          finalize: async () => {
            // Both later outputs are on disk by now.
            await access(join(dir, 'out-local', 'app', 'hello'));
            await access(join(dir, 'out.tar'));
            calls.push('finalize');
          },
        };
      },
    };
    const exporters = DEFAULT_EXPORTERS.with(fake);
    await exportResult(
      s.result,
      [
        { type: 'image', name: 'example.com/fake:v1', push: true },
        { type: 'local', dest: join(dir, 'out-local') },
        { type: 'tar', dest: join(dir, 'out.tar') },
      ],
      { exporters },
    );
    assert.deepEqual(calls, ['export example.com/fake:v1 (ref)', 'finalize']);
    const ends = s.events.filter((e): e is ExportEvent => e.type === 'export' && e.completed !== undefined).map((e) => e.output);
    assert.deepEqual(ends, [1, 2, 0], 'the finalized output completes last');
    const tarBytes = s.events.filter((e): e is ExportStatusEvent => e.type === 'export-status' && e.output === 2 && e.id === 'bytes written').at(-1);
    assert.ok(tarBytes?.completed !== undefined && tarBytes.current > 0, 'the tar reports the bytes it wrote');
  });

  /** The final `layers compressed` count of each output. */
  function compressed(events: readonly ProgressEvent[]): Map<number, number> {
    const counts = new Map<number, number>();
    for (const e of events) if (e.type === 'export-status' && e.id === 'layers compressed' && e.completed !== undefined) counts.set(e.output, e.current);
    return counts;
  }

  it('oci, docker and image outputs of one build compress the new layer once', async () => {
    await using s = await solved('shared');
    await exportResult(s.result, [
      { type: 'oci', dest: join(dir, 'shared-oci.tar') },
      { type: 'docker', dest: join(dir, 'shared-docker.tar'), name: 'example.com/shared:v1' },
      { type: 'image', name: 'example.com/shared:v1' },
    ]);
    assert.deepEqual([...compressed(s.events)], [[0, 1], [1, 0], [2, 0]]);
    // Each image output says which manifest it wrote (the tty e2e test checks one against its archive).
    const digests = s.events.filter((e): e is ExportEvent => e.type === 'export' && e.completed !== undefined).map((e) => e.digest ?? '');
    assert.equal(digests.length, 3);
    assert.ok(digests.every((d) => /^sha256:[0-9a-f]{64}$/.test(d)), digests.join(' '));
  });

  it('outputs of one build are one image: the same created time, config and manifest digests, whenever each is written', async () => {
    await using s = await solved('one-image');
    const [oci, ociDockerTypes, docker] = ['one-oci.tar', 'one-oci-docker-types.tar', 'one-docker.tar'].map((f) => join(dir, f)) as [string, string, string];
    await exportResult(s.result, [{ type: 'oci', dest: oci }, { type: 'docker', dest: docker, name: 'example.com/one:v1' }]);
    // Later, and in a call of its own: still the build's image.
    await new Promise((resolve) => setTimeout(resolve, 20));
    await exportResult(s.result, [{ type: 'image', name: 'example.com/one:v1' }, { type: 'oci', dest: ociDockerTypes, ociMediaTypes: false }]);
    const ociManifest = async (tarball: string) => {
      const index = JSON.parse((await execa('tar', ['-xOf', tarball, 'index.json'])).stdout) as { manifests: { digest: string }[] };
      const digest = index.manifests[0]?.digest ?? '';
      const manifest = JSON.parse((await execa('tar', ['-xOf', tarball, `blobs/${digest.replace(':', '/')}`])).stdout) as { config: { digest: string } };
      return { digest, config: manifest.config.digest };
    };
    const fromOci = await ociManifest(oci);
    assert.equal(s.session.content.records.images.get('example.com/one:v1')?.manifest.digest, fromOci.digest, 'type=image and type=oci give one manifest');
    // Docker media types make another manifest, of the same config.
    const withDockerTypes = await ociManifest(ociDockerTypes);
    const dockerManifest = JSON.parse((await execa('tar', ['-xOf', docker, 'manifest.json'])).stdout) as { Config: string }[];
    assert.equal(withDockerTypes.config, fromOci.config);
    assert.equal(dockerManifest[0]?.Config, `blobs/sha256/${fromOci.config.slice('sha256:'.length)}`);
  });

  it('outputs exported at the same time share one export of the layer (memoized per solve)', async () => {
    await using s = await solved('concurrent');
    await Promise.all([
      exportResult(s.result, [{ type: 'oci', dest: join(dir, 'concurrent-a.tar') }]),
      exportResult(s.result, [{ type: 'oci', dest: join(dir, 'concurrent-b.tar') }]),
    ]);
    const counts = compressed(s.events);
    assert.deepEqual([...counts.keys()].sort(), [0, 1], 'the two calls number their outputs apart');
    assert.equal([...counts.values()].reduce((a, b) => a + b, 0), 1, 'one compression for both outputs');
  });
});
