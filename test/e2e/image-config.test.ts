/**
 * The `image` part of JSON LLB through the CLI, with no registry: a first
 * build writes an OCI layout with a config, a second starts from it through
 * an `oci-layout://` source as `image.base` and replaces fields of it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { kiln, removeDir, tempDir } from './harness.js';

interface OciIndex {
  readonly manifests: readonly { readonly digest: string }[];
}

/** The image config of the single image in an OCI layout directory. */
async function configOf(layout: string): Promise<{ config: Record<string, unknown> }> {
  const blob = async (digest: string): Promise<unknown> => JSON.parse(await readFile(join(layout, 'blobs', ...digest.split(':')), 'utf8'));
  const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as OciIndex;
  const manifest = (await blob(index.manifests[0]?.digest ?? '')) as { config: { digest: string } };
  return (await blob(manifest.config.digest)) as { config: Record<string, unknown> };
}

describe('image config', () => {
  let work: string;
  before(async () => {
    work = await tempDir('image-config');
  });
  after(async () => removeDir(work));

  /** Builds `def` into an OCI tarball and unpacks it as a layout directory. */
  async function buildLayout(name: string, def: object, ...extra: string[]): Promise<string> {
    const file = join(work, `${name}.json`);
    await writeFile(file, JSON.stringify(def));
    const tar = join(work, `${name}.tar`);
    const r = await kiln(['build', file, '--root', join(work, 'root'), '-o', `type=oci,dest=${tar},name=example.test/${name}:v1`, ...extra]);
    assert.equal(r.exitCode, 0, r.stderr);
    const layout = join(work, name);
    await mkdir(layout);
    await execa('tar', ['-xf', tar, '-C', layout]);
    return layout;
  }

  const hello = { file: { actions: [{ input: -1, output: 0, mkfile: { path: '/hello', data: 'hi\n' } }] } };

  test("without image nor --image-config, the config is BuildKit's default: the default PATH and WorkingDir /", async () => {
    const layout = await buildLayout('plain', { version: 1, ops: { hello }, result: 'hello' });
    const { config } = await configOf(layout);
    assert.deepEqual(config, { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], WorkingDir: '/' });
    // An image config given is the whole config: nothing is added to it.
    const given = await buildLayout('given', { version: 1, ops: { hello }, result: 'hello', image: { config: { cmd: ['/hello'] } } });
    assert.deepEqual((await configOf(given)).config, { Cmd: ['/hello'] });
  });

  test("env entries replace the base's by variable name, in place; other fields replace whole", async () => {
    const base = await buildLayout('base', {
      version: 1,
      ops: { hello },
      result: 'hello',
      image: { config: { env: ['A=1', 'PATH=/base/bin', 'B=2'], cmd: ['/base'], labels: { old: 'x' }, workingDir: '/w' } },
    });
    assert.deepEqual((await configOf(base)).config['Env'], ['A=1', 'PATH=/base/bin', 'B=2']);

    const derived = await buildLayout(
      'derived',
      {
        version: 1,
        ops: {
          base: { source: { identifier: 'oci-layout://base:v1' } },
          step: { inputs: ['base'], file: { actions: [{ input: 0, output: 0, mkfile: { path: '/more', data: 'x' } }] } },
        },
        result: 'step',
        image: { base: 'base', config: { env: ['PATH=/new/bin', 'C=3', 'A=0'], labels: { new: 'y' } } },
      },
      '--oci-layout',
      `base=${base}`,
    );
    const { config } = await configOf(derived);
    // As Dockerfile's ENV does (BuildKit's addEnv): a variable the base has keeps its place.
    assert.deepEqual(config['Env'], ['A=0', 'PATH=/new/bin', 'B=2', 'C=3']);
    assert.deepEqual(config['Labels'], { new: 'y' });
    assert.deepEqual(config['Cmd'], ['/base']);
    assert.equal(config['WorkingDir'], '/w');
  });
});
