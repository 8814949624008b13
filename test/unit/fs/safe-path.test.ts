import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ERROR_CODES, KilnError } from '../../../src/errors.js';
import { resolveInRoot, toRootPath } from '../../../src/fs/safe-path.js';

describe('resolveInRoot', () => {
  let base: string;
  let root: string;
  let outside: string;

  before(async () => {
    base = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-safepath-'));
    root = path.join(base, 'root');
    outside = path.join(base, 'outside');
    await fs.mkdir(path.join(root, 'etc'), { recursive: true });
    await fs.mkdir(path.join(root, 'a/b'), { recursive: true });
    await fs.mkdir(outside);
    await fs.writeFile(path.join(root, 'etc/passwd'), 'inside');
    await fs.writeFile(path.join(outside, 'secret'), 'outside');
    const links: [string, string][] = [
      ['to-root', '/'],
      ['to-etc', '/etc'],
      ['up', '../../..'],
      ['a/b/up', '../../../../..'],
      ['to-outside', '../outside'],
      ['to-host-outside', outside], // an absolute host path means a path inside the root
      ['chain1', 'chain2'],
      ['chain2', 'a/../chain3'],
      ['chain3', '/to-etc'],
      ['loop1', 'loop2'],
      ['loop2', '/loop1'],
      ['self', 'self'],
      ['dangling', '/nowhere/file'],
      ['a/rel', '../etc'],
    ];
    for (const [at, target] of links) await fs.symlink(target, path.join(root, at));
  });
  after(async () => fs.rm(base, { recursive: true, force: true }));

  const expectations: [string, string][] = [
    ['/', ''],
    ['', ''],
    ['etc/passwd', 'etc/passwd'],
    ['/a/./b/', 'a/b'],
    ['../../..', ''],
    ['a/../../../etc/passwd', 'etc/passwd'],
    ['to-root/to-root/etc', 'etc'],
    ['to-etc/passwd', 'etc/passwd'],
    ['up/etc/passwd', 'etc/passwd'],
    ['a/b/up/etc', 'etc'],
    ['to-outside/secret', 'outside/secret'],
    ['chain1/passwd', 'etc/passwd'],
    ['dangling', 'nowhere/file'],
    ['a/rel/passwd', 'etc/passwd'],
    ['missing/../to-etc/passwd', 'etc/passwd'],
    ['etc/passwd/x/../../../to-etc', 'etc'],
  ];
  for (const [input, expected] of expectations) {
    it(`resolves ${JSON.stringify(input)} to <root>/${expected}`, async () => {
      const got = await resolveInRoot(root, input);
      assert.equal(got, path.join(root, expected));
      assert.ok(got === root || got.startsWith(`${root}/`));
    });
  }

  it('reads an absolute host path in a link as a path inside the root', async () => {
    assert.equal(await resolveInRoot(root, 'to-host-outside/secret'), path.join(root, outside, 'secret'));
  });

  it('leaves the last component alone with followFinal=false', async () => {
    assert.equal(await resolveInRoot(root, '/to-etc', { followFinal: false }), path.join(root, 'to-etc'));
    assert.equal(await resolveInRoot(root, '/chain1/passwd', { followFinal: false }), path.join(root, 'etc/passwd'));
    assert.equal(await resolveInRoot(root, '/to-root/..', { followFinal: false }), root);
  });

  for (const p of ['loop1', 'self/x', 'a/../loop2']) {
    it(`reports a symlink loop for ${p}, naming the path`, async () => {
      await assert.rejects(
        resolveInRoot(root, p),
        (err: unknown) => err instanceof KilnError && err.code === ERROR_CODES.FILE_ACTION && err.message.includes(`"${p}"`) && /symbolic links/.test(err.message),
      );
    });
  }

  it('maps a host path back to the path inside the root', () => {
    assert.equal(toRootPath(root, path.join(root, 'etc/passwd')), '/etc/passwd');
    assert.equal(toRootPath(root, root), '/');
  });
});
