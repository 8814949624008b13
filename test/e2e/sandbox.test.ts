/**
 * The exec sandbox end to end through the CLI, on each worker (runc, and
 * containerd against a private daemon): sandboxed ops run under the seccomp
 * filter and cannot mount; insecure ops (`--allow security.insecure`) can,
 * unfiltered; cgroupParent places the container's cgroup; `kiln workers`
 * says seccomp is on.
 */
import assert from 'node:assert/strict';
import { readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { busyboxOps, WORKERS, workerSuite } from './workers.js';
import { kiln as runKiln } from './harness.js';

/** Reports seccomp mode and tries a mount, into /out; `/mnt` is a scratch mount to mount over. */
function mountProbe(security: 'sandbox' | 'insecure'): Record<string, unknown> {
  const script = 'grep "^Seccomp:" /proc/self/status > /out/seccomp; mount -t tmpfs none /mnt 2> /out/mount-error; echo $? > /out/mount-code';
  return {
    inputs: ['base'],
    exec: {
      meta: { args: ['/bin/sh', '-c', script] },
      mounts: [
        { dest: '/', input: 0, output: -1, readonly: true },
        { dest: '/out', input: -1, output: 0 },
        { dest: '/mnt', input: -1, output: -1 },
      ],
      security,
    },
  };
}

for (const workerId of WORKERS) {
  describe(`the exec sandbox on the ${workerId} worker`, () => {
    const suite = workerSuite(workerId, 'sandbox');
    let n = 0;

    /** Builds op `result` of `ops` (on the busybox base) into a fresh dir; returns the dir. */
    const build = async (ops: Record<string, unknown>, result: string, args: readonly string[] = []): Promise<string> => {
      const base = await busyboxOps();
      const file = join(suite.work, `def${n}.json`);
      const out = join(suite.work, `out${n++}`);
      await writeFile(file, JSON.stringify({ version: 1, ops: { ...base, ...ops }, result }));
      const r = await runKiln(['build', file, '--root', suite.root, '--local', 'tools=/bin', '--output', `type=local,dest=${out}`, ...suite.workerArgs('build'), ...args]);
      assert.equal(r.exitCode, 0, r.stderr);
      return out;
    };
    const read = (dir: string, name: string): Promise<string> => readFile(join(dir, name), 'utf8');

    test('sandboxed: seccomp filter on and mounting refused; insecure: no filter and mounting works', async () => {
      const sandboxed = await build({ probe: mountProbe('sandbox') }, 'probe');
      assert.equal(await read(sandboxed, 'seccomp'), 'Seccomp:\t2\n');
      assert.notEqual(await read(sandboxed, 'mount-code'), '0\n');
      assert.match(await read(sandboxed, 'mount-error'), /permission denied/);

      const insecure = await build({ probe: mountProbe('insecure') }, 'probe', ['--allow', 'security.insecure']);
      assert.equal(await read(insecure, 'seccomp'), 'Seccomp:\t0\n');
      assert.equal(await read(insecure, 'mount-code'), '0\n');
      assert.equal(await read(insecure, 'mount-error'), '');
    });

    test('cgroupParent places the container cgroup; kiln workers shows seccomp on', async () => {
      const parent = `kiln-e2e-${workerId}-${process.pid}`;
      try {
        const op = {
          inputs: ['base'],
          exec: {
            meta: { args: ['/bin/sh', '-c', 'cat /proc/self/cgroup > /out/cgroup'], cgroupParent: `/${parent}` },
            mounts: [
              { dest: '/', input: 0, output: -1, readonly: true },
              { dest: '/out', input: -1, output: 0 },
            ],
          },
        };
        const out = await build({ cg: op }, 'cg');
        const pids = (await read(out, 'cgroup')).split('\n').find((l) => /^\d+:pids:/.test(l));
        assert.match(pids ?? '', new RegExp(`^\\d+:pids:/${parent}/[^/]+$`));
      } finally {
        for (const hierarchy of await readdir('/sys/fs/cgroup')) await rmdir(join('/sys/fs/cgroup', hierarchy, parent)).catch(() => undefined);
      }
      const workers = await runKiln(['workers', '--root', suite.root, ...suite.workerArgs('workers')]);
      assert.equal(workers.exitCode, 0, workers.stderr);
      assert.match(workers.stdout, new RegExp(`^${workerId}\\t.*\\tkiln\\.executor=${workerId},[^\\t]*kiln\\.seccomp=on\\tavailable$`, 'm'));
    });
  });
}
