/**
 * The contract of the solver's ResultCache, as one suite that every
 * implementation passes: the real one (the cache manager's results records,
 * through ops/result-cache.ts) and the solver tests' fake. A fake that
 * behaved otherwise (it once overwrote where the real cache kept the first
 * record) would let solver tests pass that the real cache fails.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, test } from 'node:test';
import type { CacheKey } from '../../../src/digest.js';
import type { ResultCache, Vertex } from '../../../src/solver/types.js';

/** One implementation under test, opened fresh for each test. */
export interface ResultCacheSubject<R> {
  readonly cache: ResultCache<R>;
  /** A new result holding `value` (as an op's run makes one); the caller releases it. */
  make(value: string): Promise<R>;
  /** The value a result holds. */
  read(result: R): Promise<string>;
  close(): Promise<void>;
}

const key = (s: string): CacheKey => `sha256:${s.padStart(64, '0')}` as CacheKey;

/** A vertex as the solver passes it to save (only its name and flags are read). */
function vertex<R>(name: string): Vertex<R> {
  return {
    digest: key(name) as string as Vertex<R>['digest'],
    name,
    inputs: [],
    ignoreCache: false,
    op: { cacheKey: async () => key(name), run: async () => [] },
  };
}

/** Runs the ResultCache contract against `open`. */
export function resultCacheContract<R>(name: string, open: () => Promise<ResultCacheSubject<R>>): void {
  describe(`ResultCache contract: ${name}`, () => {
    let s: ResultCacheSubject<R>;
    beforeEach(async () => {
      s = await open();
    });
    afterEach(async () => {
      await s.close();
    });

    const values = async (found: readonly R[] | undefined): Promise<string[] | undefined> =>
      found === undefined ? undefined : Promise.all(found.map((r) => s.read(r)));
    const releaseAll = async (rs: readonly R[] | undefined): Promise<void> => {
      for (const r of rs ?? []) await s.cache.release(r);
    };

    test('a key never saved loads nothing', async () => {
      assert.equal(await s.cache.load(key('missing')), undefined);
    });

    test('what was saved loads back, every output in order, after the saver released its handles', async () => {
      const a = await s.make('a');
      const b = await s.make('b');
      await s.cache.save(key('k'), [a, b], vertex('two outputs'));
      await releaseAll([a, b]);
      const found = await s.cache.load(key('k'));
      assert.deepEqual(await values(found), ['a', 'b']);
      await releaseAll(found);
    });

    test('the latest save of a key wins (an ignoreCache rerun replaces the record)', async () => {
      const first = await s.make('first');
      await s.cache.save(key('k'), [first], vertex('run 1'));
      const second = await s.make('second');
      await s.cache.save(key('k'), [second], vertex('run 2'));
      await releaseAll([first, second]);
      const found = await s.cache.load(key('k'));
      assert.deepEqual(await values(found), ['second']);
      await releaseAll(found);
    });

    test('saving one key leaves the others alone', async () => {
      const a = await s.make('a');
      const b = await s.make('b');
      await s.cache.save(key('a'), [a], vertex('a'));
      await s.cache.save(key('b'), [b], vertex('b'));
      await s.cache.save(key('a'), [b], vertex('a again'));
      const found = [...((await s.cache.load(key('a'))) ?? []), ...((await s.cache.load(key('b'))) ?? [])];
      assert.deepEqual(await values(found), ['b', 'b']);
      await releaseAll([a, b, ...found]);
    });

    test('each load and retain is its own handle: releasing one leaves the others usable', async () => {
      const a = await s.make('a');
      await s.cache.save(key('k'), [a], vertex('a'));
      const one = await s.cache.load(key('k'));
      const two = await s.cache.load(key('k'));
      assert.ok(one !== undefined && two !== undefined);
      const kept = s.cache.retain(one[0] as R);
      await releaseAll([a, ...one]);
      assert.equal(await s.read(kept), 'a');
      assert.deepEqual(await values(two), ['a']);
      await releaseAll([kept, ...two]);
    });
  });
}
