/** The source seam: schemes resolve through the registry, unknown ones and unbound names are refused before anything runs. */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  type CacheKey,
  DEFAULT_SOURCES,
  DefinitionBuilder,
  ERROR_CODES,
  KilnError,
  loadDefinition,
  mkfile,
  type ProgressEvent,
  Session,
  solve,
  type Source,
  SourceRegistry,
  type SourceOpOf,
  UnboundSourceError,
} from '../../../src/index.js';

/** The loaded source op of a one-source definition. */
function sourceOpOf(identifier: string): SourceOpOf {
  const b = new DefinitionBuilder();
  const op = [...loadDefinition(b.build(b.source('src', identifier))).ops.values()][0];
  assert.ok(op !== undefined && op.body.kind === 'source');
  return { ...op, body: op.body };
}

const NO_BINDINGS = { locals: new Map<string, string>(), ociLayouts: new Map<string, string>() };
/** Every scheme kiln loads has a built-in source: a registry without one stands for a build of kiln that lacks it. */
const NO_SOURCES = new SourceRegistry([]);

describe('source registry', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-sources-'));
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  it('refuses a scheme with no source, naming the op and field', () => {
    assert.throws(
      () => NO_SOURCES.check(sourceOpOf('https://example.com/a.tar'), NO_BINDINGS),
      (err: unknown) =>
        err instanceof KilnError &&
        err.code === ERROR_CODES.UNSUPPORTED_SOURCE &&
        err.op === 'src' &&
        err.field === 'ops.src.source.identifier' &&
        /https:\/\/ sources are not supported/.test(err.message),
    );
  });

  it('says which binding is missing, as data, without flag advice', () => {
    assert.throws(
      () => DEFAULT_SOURCES.check(sourceOpOf('local://context'), NO_BINDINGS),
      (err: unknown) =>
        err instanceof UnboundSourceError &&
        err.code === ERROR_CODES.LOCAL_SOURCE &&
        err.bindings === 'locals' &&
        err.binding === 'context' &&
        err.message === 'local source "context" is not bound',
    );
    assert.throws(
      () => DEFAULT_SOURCES.check(sourceOpOf('oci-layout://app:v1'), NO_BINDINGS),
      (err: unknown) => err instanceof UnboundSourceError && err.code === ERROR_CODES.IMAGE && err.bindings === 'ociLayouts' && err.binding === 'app',
    );
  });

  it('solve() refuses an unknown scheme before any op runs', async () => {
    await using session = await Session.open({ root: join(dir, 'root') });
    const b = new DefinitionBuilder();
    const events: ProgressEvent[] = [];
    const definition = b.build(b.merge('both', [b.file('f', [mkfile('/f', 'f')]), b.source('src', 'https://example.com/a.tar')]));
    await assert.rejects(solve(session, definition, { sources: NO_SOURCES, progress: { emit: (e) => events.push(e) } }), (err: unknown) => err instanceof KilnError && err.code === ERROR_CODES.UNSUPPORTED_SOURCE && err.op === 'src');
    assert.deepEqual(events, []);
  });

  it('a scheme registered by a test resolves through the seam: keyed and snapshotted by its own source', async () => {
    const calls: string[] = [];
    const fake: Source = {
      scheme: 'https',
      check: (op) => void calls.push(`check ${op.name}`),
      resolve: (op) => ({
        cacheKey: async () => {
          calls.push(`key ${op.name}`);
          return `fake:${op.body.source.identifier}` as CacheKey;
        },
        snapshot: async (cache) => {
          calls.push(`snapshot ${op.name}`);
          const mutable = await cache.newMutable(null, { description: 'fake' });
          {
            await using target = await mutable.mount();
            await writeFile(join(target.path, 'fetched'), op.body.source.identifier);
          }
          return mutable.commit();
        },
      }),
    };
    const sources = DEFAULT_SOURCES.with(fake);
    assert.ok(sources.schemes.includes('https') && sources.schemes.includes('local'));
    assert.ok(NO_SOURCES.with(fake).schemes.includes('https') && !NO_SOURCES.schemes.includes('https'), 'with() leaves the original alone');

    await using session = await Session.open({ root: join(dir, 'root') });
    const b = new DefinitionBuilder();
    const definition = b.build(b.source('src', 'https://example.com/a.tar'));
    {
      await using result = await solve(session, definition, { sources });
      await using mounted = await result.mount();
      assert.equal(await readFile(join(mounted.path, 'fetched'), 'utf8'), 'https://example.com/a.tar');
    }
    assert.deepEqual(calls, ['check src', 'key src', 'snapshot src']);
    // Cached under the fake's key: the second solve keys but does not snapshot.
    await (await solve(session, definition, { sources })).release();
    assert.deepEqual(calls.slice(3), ['check src', 'key src']);
  });
});
