#!/usr/bin/env node
// Serves a small git repository for llb-examples/git-source.json: makes the
// repository in a temp dir (branch main, tag v1, a `greeting/` folder), then
// runs `git daemon` on 127.0.0.1 (port 19418, or the first argument) in the
// foreground until Ctrl-C, and removes the temp dir when it stops.
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const port = Number(process.argv[2] ?? 19418);
const base = mkdtempSync(join(tmpdir(), 'kiln-example-git-'));
const repo = join(base, 'hello');
const env = {
  ...process.env,
  GIT_CONFIG_GLOBAL: '/dev/null',
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_AUTHOR_NAME: 'kiln example',
  GIT_AUTHOR_EMAIL: 'example@kiln.invalid',
  GIT_COMMITTER_NAME: 'kiln example',
  GIT_COMMITTER_EMAIL: 'example@kiln.invalid',
};
const git = (...args) => execFileSync('git', args, { cwd: repo, env, stdio: ['ignore', 'ignore', 'inherit'] });

mkdirSync(join(repo, 'greeting'), { recursive: true });
git('init', '--quiet', '--initial-branch=main');
writeFileSync(join(repo, 'README.md'), 'An example repository for kiln git sources.\n');
writeFileSync(join(repo, 'greeting', 'greet.sh'), 'echo "hello from $(cat /src/name.txt), checked out by kiln"\n');
writeFileSync(join(repo, 'greeting', 'name.txt'), 'a git source\n');
git('add', '--all');
git('commit', '--quiet', '-m', 'greeting');
git('tag', '-a', 'v1', '-m', 'v1');

const daemon = spawn('git', ['daemon', '--reuseaddr', '--listen=127.0.0.1', `--port=${port}`, `--base-path=${base}`, '--export-all', base], { stdio: 'inherit' });
console.error(`serving git://127.0.0.1:${port}/hello (branch main, tag v1) from ${base}; Ctrl-C stops it`);
const stop = () => daemon.kill('SIGTERM');
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
daemon.on('exit', (code) => {
  rmSync(base, { recursive: true, force: true });
  process.exit(code ?? 0);
});
