/** The programmatic API as the README shows it: build a graph, solve it, export it. */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DefinitionBuilder, exportResult, KilnError, mkdir, mkfile, type ProgressEvent, Session, solve } from '../../../src/index.js';

describe('solve() API', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-api-'));
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  it('solves a built graph, streams progress, exports, and caches across sessions', async () => {
    const b = new DefinitionBuilder();
    const app = b.file('app', [mkdir('/app', { mode: 0o755 }), mkfile('/app/hello', 'hi\n')]);
    const definition = b.build(app);
    const events: ProgressEvent[] = [];
    {
      await using session = await Session.open({ root: join(dir, 'root') });
      await using result = await solve(session, definition, { progress: { emit: (e) => events.push(e) } });
      await exportResult(result, [{ type: 'local', dest: join(dir, 'out') }]);
    }
    assert.equal(await readFile(join(dir, 'out/app/hello'), 'utf8'), 'hi\n');
    assert.equal((await stat(join(dir, 'out/app'))).mode & 0o777, 0o755);
    assert.ok(events.some((e) => e.type === 'vertex' && e.completed !== undefined && !e.cached));

    const again: ProgressEvent[] = [];
    await using session = await Session.open({ root: join(dir, 'root') });
    await using result = await solve(session, definition, { progress: { emit: (e) => again.push(e) } });
    assert.ok(result.ref !== null);
    assert.ok(again.every((e) => e.type !== 'vertex' || e.cached), 'second session answers from cache');
  });

  it('takes an AbortSignal and rejects with a cancellation', async () => {
    await using session = await Session.open({ root: join(dir, 'root') });
    const b = new DefinitionBuilder();
    const definition = b.build(b.file('x', [mkfile('/x', 'x')], { ignoreCache: true }));
    await assert.rejects(solve(session, definition, { signal: AbortSignal.abort(new Error('stop')) }), (err: unknown) => err instanceof KilnError && err.code === 'E_CANCELLED');
  });

  it('noCache reruns every op, or the named ops and their descendants; an unknown name is a usage error', async () => {
    const b = new DefinitionBuilder();
    const base = b.file('base', [mkdir('/a', { mode: 0o755 })]);
    const side = b.file('side', [mkdir('/s', { mode: 0o755 })]);
    const top = b.file('top', [mkfile('/a/t', 't')], { input: base });
    const definition = b.build(b.merge('all', [top, side]));
    await using session = await Session.open({ root: join(dir, 'root-nocache') });
    const ran = async (noCache?: boolean | readonly string[]): Promise<string[]> => {
      const events: ProgressEvent[] = [];
      await using _ = await solve(session, definition, { progress: { emit: (e) => events.push(e) }, ...(noCache === undefined ? {} : { noCache }) });
      return [...new Set(events.flatMap((e) => (e.type === 'vertex' && e.completed !== undefined && !e.cached ? [e.name] : [])))].sort();
    };
    assert.equal((await ran()).length, 4);
    assert.deepEqual(await ran(), []);
    assert.equal((await ran(true)).length, 4);
    const rerun = await ran(['top']);
    assert.equal(rerun.length, 2, 'top and the merge built on it');
    assert.ok(rerun.some((name) => name.includes('/a/t')) && !rerun.some((name) => name.includes('/s')));
    await assert.rejects(ran(['nope']), (err: unknown) => err instanceof KilnError && err.code === 'E_USAGE' && err.message.includes('"nope"'));
  });
});

