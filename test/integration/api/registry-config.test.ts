/**
 * kiln.toml's registry settings through the TypeScript API: a config given
 * to Session.open (as loadConfig reads it) sends pulls through a mirror,
 * against two real registries on 127.0.0.1 that need no insecure flag.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DefinitionBuilder, exportResult, loadConfig, mkfile, Session, solve } from '../../../src/index.js';
import { startRegistry, type TestRegistry } from '../../support/registry.js';

describe('registry settings through the API', () => {
  let dir: string;
  let origin: TestRegistry;
  let mirror: TestRegistry;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-registry-config-'));
    [origin, mirror] = await Promise.all([startRegistry(), startRegistry()]);
  });
  after(async () => {
    await Promise.all([origin.stop(), mirror.stop()]);
    await rm(dir, { recursive: true, force: true });
  });

  it('pulls an image only the mirror has by its origin name, with the config from loadConfig', async () => {
    const b = new DefinitionBuilder();
    {
      await using session = await Session.open({ root: join(dir, 'push-root') });
      await using result = await solve(session, b.build(b.file('hello', [mkfile('/hello', 'mirrored\n')])));
      await exportResult(result, [{ type: 'image', name: `${mirror.host}/kiln/only-in-mirror:1`, push: true }]);
    }
    const file = join(dir, 'kiln.toml');
    await writeFile(file, `[registry."${origin.host}"]\nmirrors = ["${mirror.host}"]\n`);
    const config = loadConfig({ file });
    assert.deepEqual(config.registry, { [origin.host]: { mirrors: [mirror.host] } });

    const pull = new DefinitionBuilder();
    await using session = await Session.open({ root: join(dir, 'pull-root'), config });
    await using result = await solve(session, pull.build(pull.source('base', `docker-image://${origin.host}/kiln/only-in-mirror:1`)));
    await exportResult(result, [{ type: 'local', dest: join(dir, 'out') }]);
    assert.equal(await readFile(join(dir, 'out', 'hello'), 'utf8'), 'mirrored\n');
  });
});
