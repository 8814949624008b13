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
});
