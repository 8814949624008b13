/**
 * The namespace pool with the real CNI plugins (bridge, host-local) on a
 * bridge and subnet of the test's own: spare namespaces are parked for the
 * next pool when one closes, claimed by it without a new CNI ADD, never
 * parked when a container could have changed them or when parking is off,
 * and torn down (lease freed) when parked for another network. Needs root.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { NetworkConfigList } from '../../../src/network/cni.js';
import { NamespacePool, removeParkedNamespaces } from '../../../src/network/namespace-pool.js';

const BRIDGE = 'kilnpool0';
/** The other network's: the bridge plugin gives a bridge one subnet. */
const OTHER_BRIDGE = 'kilnpool1';
const BIN_DIRS = ['/usr/lib/cni', '/opt/cni/bin'];

describe('namespace pool: parked namespaces', () => {
  let dir = '';
  const network = (subnet: string): NetworkConfigList => ({
    cniVersion: '1.0.0',
    name: 'kiln-pool-test',
    plugins: [{ type: 'bridge', bridge: subnet === '10.252.7.0/24' ? BRIDGE : OTHER_BRIDGE, isGateway: true, ipMasq: false, ipam: { type: 'host-local', ranges: [[{ subnet }]], dataDir: path.join(dir, 'ipam') } }],
  });
  const open = (subnet: string, extra: { maxParked?: number } = {}) =>
    NamespacePool.open({ dir, runtime: { binDirs: BIN_DIRS }, network: network(subnet), resolvConf: 'nameserver 10.0.0.1\n', ...extra });
  const records = async () => (await readdir(path.join(dir, 'records'))).sort();
  const namespaces = async () => readdir(path.join(dir, 'ns'));
  const leases = async () => (await readdir(path.join(dir, 'ipam', 'kiln-pool-test')).catch((): string[] => [])).filter((f) => f !== 'lock' && !f.startsWith('last_reserved_ip'));

  /** No record, namespace or lease is left in the pool's directory. */
  const assertNothingLeft = async () => {
    assert.deepEqual(await records(), []);
    assert.deepEqual(await namespaces(), []);
    assert.deepEqual(await leases(), [], 'the leases are freed');
  };

  before(async () => {
    dir = await mkdtemp('/dev/shm/kiln-pool-');
  });
  after(async () => {
    for (const file of await readdir(path.join(dir, 'ns')).catch((): string[] => [])) execFileSync('umount', ['--lazy', path.join(dir, 'ns', file)]);
    for (const bridge of [BRIDGE, OTHER_BRIDGE]) spawnSync('ip', ['link', 'del', bridge], { stdio: 'ignore' });
    await rm(dir, { recursive: true, force: true });
  });

  test('a closing pool parks its spare namespace; the next pool claims it (same address, no new lease)', async () => {
    const first = await open('10.252.7.0/24');
    const lease = await first.acquire();
    lease.release({ reusable: true });
    await first.close();
    const parked = await records();
    assert.equal(parked.length, 1);
    assert.match(parked[0] ?? '', /^parked-n[0-9a-f]{12}\.json$/);
    assert.equal((await namespaces()).length, 1, 'the namespace stays');
    assert.equal((await leases()).length, 1, 'and its lease');

    const second = await open('10.252.7.0/24');
    const again = await second.acquire();
    assert.equal(again.address, lease.address, 'the parked namespace was claimed');
    assert.equal(again.namespacePath, lease.namespacePath);
    assert.deepEqual((await records()).filter((f) => f.startsWith('parked-')), [], 'no longer parked');
    // A container that could have changed it (CAP_NET_ADMIN): torn down, never parked.
    again.release({ reusable: false });
    await second.close();
    await assertNothingLeft();
    assert.ok(!existsSync(again.namespacePath));
  });

  test('removeParkedNamespaces (kiln prune --all) tears every parked namespace down, lease and all', async () => {
    const pool = await open('10.252.7.0/24');
    const leases = [await pool.acquire(), await pool.acquire()];
    for (const lease of leases) lease.release({ reusable: true });
    await pool.close();
    assert.equal((await records()).filter((f) => f.startsWith('parked-')).length, 2);
    assert.equal(await removeParkedNamespaces(dir, undefined), 2);
    await assertNothingLeft();
    for (const lease of leases) assert.ok(!existsSync(lease.namespacePath));
  });

  test('maxParked 0 tears every spare down at close', async () => {
    const pool = await open('10.252.7.0/24', { maxParked: 0 });
    (await pool.acquire()).release({ reusable: true });
    await pool.close();
    await assertNothingLeft();
  });

  test('a namespace parked for another network is torn down by the claimer, which makes its own', async () => {
    const other = await open('10.252.8.0/24');
    const lease = await other.acquire();
    lease.release({ reusable: true });
    await other.close();
    assert.equal((await records()).length, 1);

    const pool = await open('10.252.7.0/24');
    const own = await pool.acquire();
    assert.match(own.address, /^10\.252\.7\./, 'a namespace on its own network');
    assert.notEqual(own.namespacePath, lease.namespacePath);
    own.release({ reusable: false });
    await pool.close();
    await assertNothingLeft();
  });

  test('the parked record says how to undo it without the process that made it', async () => {
    const pool = await open('10.252.7.0/24');
    (await pool.acquire()).release({ reusable: true });
    await pool.close();
    const [file] = await records();
    const record = JSON.parse(await readFile(path.join(dir, 'records', file ?? ''), 'utf8')) as { netns: string; containerId: string; result?: unknown };
    assert.ok(record.result !== undefined && existsSync(record.netns));
    // A pool on another network claims it and tears it down.
    const off = await open('10.252.8.0/24');
    const made = await off.acquire();
    made.release({ reusable: false });
    await off.close();
    await assertNothingLeft();
  });
});
