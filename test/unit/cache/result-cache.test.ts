/** The ResultCache contract, run against the real cache manager and the solver tests' fake. */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createCacheManager } from '../../../src/cache/manager.js';
import type { ResultRef } from '../../../src/cache/types.js';
import { resultCache } from '../../../src/ops/result-cache.js';
import { FakeCache, type Handle } from '../../support/fake-result-cache.js';
import { resultCacheContract } from './result-cache-contract.js';

resultCacheContract<ResultRef>('cache manager', async () => {
  const root = await mkdtemp(path.join(os.tmpdir(), 'kiln-result-cache-'));
  const cm = await createCacheManager({ root });
  return {
    cache: resultCache(cm),
    async make(value) {
      const mutable = await cm.newMutable(null, { description: value });
      {
        await using m = await mutable.mount();
        await writeFile(path.join(m.path, 'value'), value);
      }
      return mutable.commit();
    },
    async read(ref) {
      if (ref === null) return '';
      await using m = await ref.mount();
      return await readFile(path.join(m.path, 'value'), 'utf8');
    },
    async close() {
      await cm.close();
      await rm(root, { recursive: true, force: true });
    },
  };
});

resultCacheContract<Handle>('solver fake', async () => {
  const fake = new FakeCache();
  return {
    cache: fake,
    make: async (value) => fake.handle(value),
    read: async (handle) => {
      if (handle.released > 0) throw new Error(`handle on ${handle.value} used after release`);
      return handle.value;
    },
    close: async () => {},
  };
});
