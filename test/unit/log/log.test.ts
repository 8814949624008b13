import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createLogger, isLogLevel } from '../../../src/log.js';

test('logs JSON lines at or above the level to a file, and nothing below it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-log-'));
  try {
    const file = join(dir, 'sub', 'kiln.log');
    const logger = createLogger({ level: 'info', file });
    logger.debug({ secret: 'not-logged' }, 'too verbose');
    logger.info({ op: 'compile' }, 'running process');
    logger.warn('plain message');
    const lines = (await readFile(file, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(lines.map((l) => [l['level'], l['msg']]), [[30, 'running process'], [40, 'plain message']]);
    assert.equal(lines[0]?.['op'], 'compile');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('KILN_LOG sets the default level', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-log-'));
  const saved = process.env['KILN_LOG'];
  try {
    process.env['KILN_LOG'] = 'debug';
    const file = join(dir, 'kiln.log');
    createLogger({ file }).debug('seen');
    assert.match(await readFile(file, 'utf8'), /"msg":"seen"/);
    assert.ok(isLogLevel('trace') && !isLogLevel('verbose'));
  } finally {
    if (saved === undefined) delete process.env['KILN_LOG'];
    else process.env['KILN_LOG'] = saved;
    await rm(dir, { recursive: true, force: true });
  }
});
