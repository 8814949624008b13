/**
 * Container networking end to end, on both workers, with the real CNI
 * plugins: a sandboxed exec op has eth0 on kiln's bridge, reaches servers
 * the test starts on the host (by the gateway address, read from its own
 * default route), resolves names through a resolver the test starts on the
 * gateway, and cannot reach the host's loopback; 16 at once get distinct
 * addresses; a SIGKILLed kiln's namespace, veth and lease are swept by the
 * next. Nothing here sends a packet off this machine.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer } from 'node:net';
import { existsSync, readdirSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test, before, after } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { kiln as runKiln, startKiln as startKilnProcess, vertices } from './harness.js';
import { busyboxOps, shStep, WORKERS, workerSuite } from './workers.js';
import { startDnsServer } from '../support/dns-server.js';
import { processStartTime } from '../../src/owner.js';

const NETWORK_DIR = '/run/kiln/net';

/** An HTTP server on `host`, counting requests; `/hello.txt` answers `hello from the host`. */
async function startHttp(host: string): Promise<{ server: Server; port: number; requests: () => number }> {
  let count = 0;
  const server = createServer((req, res) => {
    count++;
    if (req.url === '/hello.txt') res.end('hello from the host\n');
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  return { server, port: address.port, requests: () => count };
}

/** A TCP server that answers every connection with one line. */
async function startTcp(): Promise<{ server: TcpServer; port: number }> {
  const server = createTcpServer((socket) => socket.end('tcp hello\n'));
  await new Promise<void>((resolve) => server.listen(0, '0.0.0.0', resolve));
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  return { server, port: address.port };
}

/** The kiln0 bridge's IPv4 address and prefix on the host (`10.213.0.1/16`). */
async function bridgeAddress(): Promise<string> {
  const { stdout } = await execa('ip', ['-4', '-o', 'addr', 'show', 'kiln0']);
  const m = /inet (\S+)/.exec(stdout);
  assert.ok(m?.[1] !== undefined, `kiln0 has an address: ${stdout}`);
  return m[1];
}

function inSubnet(address: string, cidr: string): boolean {
  const [net = '', bits = '32'] = cidr.split('/');
  const toInt = (a: string) => a.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
  const size = 2 ** (32 - Number(bits));
  return Math.floor(toInt(address) / size) === Math.floor(toInt(net) / size);
}

let http: Awaited<ReturnType<typeof startHttp>>;
let loopbackHttp: Awaited<ReturnType<typeof startHttp>>;
let tcp: Awaited<ReturnType<typeof startTcp>>;

before(async () => {
  http = await startHttp('0.0.0.0');
  loopbackHttp = await startHttp('127.0.0.1');
  tcp = await startTcp();
});
after(() => {
  http.server.close();
  loopbackHttp.server.close();
  tcp.server.close();
});

for (const workerId of WORKERS) {
  describe(`container networking on the ${workerId} worker`, () => {
    const suite = workerSuite(workerId, 'network');
    let n = 0;
    const kiln = (args: readonly string[]) => runKiln([...args, ...suite.workerArgs(args[0])]);
    const write = async (ops: Record<string, unknown>, result: string) => {
      const file = join(suite.work, `def${n++}.json`);
      await writeFile(file, JSON.stringify({ version: 1, ops: { ...(await busyboxOps()), ...ops }, result }));
      return file;
    };
    const build = async (ops: Record<string, unknown>, result: string, args: readonly string[] = []) => {
      const file = await write(ops, result);
      const out = join(suite.work, `out${n++}`);
      const run = await kiln(['build', file, '--root', suite.root, '--local', 'tools=/bin', '--output', `type=local,dest=${out}`, '--progress', 'rawjson', ...args]);
      return { out, run, file };
    };
    const read = (dir: string, name: string) => readFile(join(dir, name), 'utf8');
    /** The gateway the container sees, once the first test has read it from its route. */
    let gateway = '';

    test('sandbox (the default): eth0 in the subnet, TCP and HTTP to the host by the gateway, not the host loopback', async () => {
      const script = [
        'ls /sys/class/net > /out/net',
        'ip -4 -o addr show eth0 > /out/addr',
        "GW=$(ip route | awk '/^default/ {print $3}')",
        'echo $GW > /out/gateway',
        `wget -q -O /out/fetched http://$GW:${http.port}/hello.txt; echo $? > /out/http`,
        `nc $GW ${tcp.port} < /dev/null > /out/tcp; echo $? >> /out/tcp`,
        // The host's 127.0.0.1 is not the container's: neither address reaches a server bound there.
        `wget -q -T 3 -O /out/lo1 http://127.0.0.1:${loopbackHttp.port}/hello.txt; echo $? > /out/lo`,
        `wget -q -T 3 -O /out/lo2 http://$GW:${loopbackHttp.port}/hello.txt; echo $? >> /out/lo`,
      ].join('; ');
      const { out, run } = await build({ probe: shStep(script) }, 'probe');
      assert.equal(run.exitCode, 0, run.stderr);
      assert.equal(await read(out, 'net'), 'eth0\nlo\n');
      const bridge = await bridgeAddress();
      const address = /inet (\d+\.\d+\.\d+\.\d+)\//.exec(await read(out, 'addr'))?.[1] ?? '';
      assert.ok(inSubnet(address, bridge), `container address ${address} is in the bridge's subnet ${bridge}`);
      gateway = (await read(out, 'gateway')).trim();
      assert.equal(gateway, bridge.split('/')[0], 'the default route goes through the bridge');
      assert.equal(await read(out, 'http'), '0\n', 'wget reached the host server');
      assert.equal(await read(out, 'fetched'), 'hello from the host\n');
      assert.equal(await read(out, 'tcp'), 'tcp hello\n0\n');
      const lo = (await read(out, 'lo')).trim().split('\n');
      assert.ok(lo.length === 2 && lo.every((code) => code !== '0'), `the host's loopback server was not reached: ${lo.join(',')}`);
      assert.equal(loopbackHttp.requests(), 0);
    });

    test('the cache key does not depend on the address given; the output holds no trace of the network', async () => {
      const step = { inputs: ['base'], exec: { meta: { args: ['/bin/sh', '-c', 'cat /etc/resolv.conf > /resolv-copy; echo done > /marker'] }, mounts: [{ dest: '/', input: 0, output: 0 }] } };
      const first = await build({ step }, 'step');
      assert.equal(first.run.exitCode, 0, first.run.stderr);
      assert.match(await read(first.out, 'resolv-copy'), /nameserver/, 'the container had a resolv.conf');
      // /dev, /proc and /sys stay, as in BuildKit's results; nothing of the network does.
      assert.deepEqual((await readdir(first.out)).sort(), ['bin', 'dev', 'marker', 'proc', 'resolv-copy', 'sys'], 'no /etc/resolv.conf or /etc/hosts stub, no /etc');
      const again = await build({ step }, 'step');
      assert.equal(again.run.exitCode, 0, again.run.stderr);
      for (const v of vertices(again.run.stderr).values()) assert.equal(v.cached, true, `${v.name} is cached the second time`);
    });

    test('DNS: a name resolves through the resolv.conf given, by a resolver on the host', async () => {
      assert.ok(gateway !== '', 'the first test found the gateway');
      const dns = await startDnsServer({ address: gateway, records: { 'kiln-test.internal': gateway } });
      try {
        const resolvConf = join(suite.work, 'resolv.conf');
        await writeFile(resolvConf, `nameserver ${gateway}\noptions timeout:2 attempts:1\n`);
        const script = `nslookup kiln-test.internal > /out/lookup 2>&1; echo $? > /out/rc; wget -q -O /out/fetched http://kiln-test.internal:${http.port}/hello.txt; echo $? >> /out/rc`;
        const { out, run } = await build({ dns: shStep(script, [], { meta: { args: ['/bin/sh', '-c', script], env: ['N=dns'] } }) }, 'dns', ['--resolv-conf', resolvConf]);
        assert.equal(run.exitCode, 0, run.stderr);
        assert.match(await read(out, 'lookup'), new RegExp(`Address:?\\s+${gateway.replaceAll('.', '\\.')}`));
        assert.equal(await read(out, 'rc'), '0\n0\n', 'nslookup and wget by name succeeded');
        assert.equal(await read(out, 'fetched'), 'hello from the host\n');
        assert.ok(dns.queries.includes('kiln-test.internal'));
      } finally {
        await dns.close();
      }
    });

    test('a resolv.conf with only loopback nameservers fails the op, naming the file and the fix', async () => {
      const resolvConf = join(suite.work, 'loopback-resolv.conf');
      await writeFile(resolvConf, 'nameserver 127.0.0.53\n');
      const { run } = await build({ lo: shStep('echo unreachable > /out/x') }, 'lo', ['--resolv-conf', resolvConf, '--progress', 'plain']);
      assert.equal(run.exitCode, 1, run.stderr);
      assert.match(run.stderr, /loopback-resolv\.conf lists only loopback nameservers \(127\.0\.0\.53\).*--resolv-conf FILE/);
    });

    test('network none has loopback only; host keeps the host network; kiln workers names the provider', async () => {
      const none = await build({ none: shStep('ls /sys/class/net > /out/net', [], { network: 'none' }) }, 'none');
      assert.equal(none.run.exitCode, 0, none.run.stderr);
      assert.equal(await read(none.out, 'net'), 'lo\n');
      const host = await build({ host: shStep('ls /sys/class/net > /out/net', [], { network: 'host' }) }, 'host', ['--allow', 'network.host']);
      assert.equal(host.run.exitCode, 0, host.run.stderr);
      assert.equal(await read(host.out, 'net'), `${(await readdir('/sys/class/net')).sort().join('\n')}\n`);
      const workers = await kiln(['workers', '--root', suite.root]);
      assert.match(workers.stdout, /\tcni \(bridge kiln0, [\d.]+\/16, NAT to the host's network\)\t/);
      const noPlugins = await kiln(['workers', '--root', suite.root, '--cni-bin-dir', join(suite.work, 'no-plugins')]);
      assert.match(noPlugins.stdout, /\tnone \(loopback only: CNI unavailable \(CNI plugins bridge.* not found in .*no-plugins/);
      const hostProvider = await build({ viaHost: shStep('ls /sys/class/net > /out/net', [], { meta: { args: ['/bin/sh', '-c', 'ls /sys/class/net > /out/net'], env: ['N=2'] } }) }, 'viaHost', ['--network-provider', 'host']);
      assert.equal(hostProvider.run.exitCode, 0, hostProvider.run.stderr);
      assert.match(await read(hostProvider.out, 'net'), /eth0/, 'the host provider gives sandboxed ops the host network');
    });

    test('without CNI, an op that fails says it had no network; --network-provider cni refuses', async () => {
      const failing = shStep(`wget -q -T 2 -O /out/x http://${gateway || '10.213.0.1'}:${http.port}/`);
      const auto = await build({ offline: failing }, 'offline', ['--cni-bin-dir', join(suite.work, 'no-plugins'), '--progress', 'plain']);
      assert.equal(auto.run.exitCode, 1);
      assert.match(auto.run.stderr, /the container had loopback only, no network: CNI plugins .* not found/);
      const cni = await build({ offline: failing }, 'offline', ['--cni-bin-dir', join(suite.work, 'no-plugins'), '--network-provider', 'cni', '--progress', 'plain']);
      assert.equal(cni.run.exitCode, 1);
      assert.match(cni.run.stderr, /E_NETWORK|install containernetworking-plugins/);
    });

    test("a user's CNI config list (--cni-config, --cni-bin-dir) is used as it is", { skip: workerId !== 'runc' && 'the provider is the same for both workers' }, async () => {
      const conflist = join(suite.work, 'user.conflist');
      const bridge = 'kilnusr0';
      await writeFile(
        conflist,
        JSON.stringify({
          cniVersion: '1.0.0',
          name: 'kiln-user-test',
          plugins: [
            {
              type: 'bridge',
              bridge,
              isGateway: true,
              ipMasq: true,
              ipam: { type: 'host-local', ranges: [[{ subnet: '10.251.7.0/24' }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: join(suite.work, 'user-ipam') },
            },
          ],
        }),
      );
      try {
        const script = `ip -4 -o addr show eth0 > /out/addr; wget -q -O /out/fetched http://10.251.7.1:${http.port}/hello.txt # user network`;
        const { out, run } = await build({ user: shStep(script) }, 'user', ['--cni-config', conflist, '--cni-bin-dir', '/usr/lib/cni']);
        assert.equal(run.exitCode, 0, run.stderr);
        assert.match(await read(out, 'addr'), /inet 10\.251\.7\.\d+\/24/);
        assert.equal(await read(out, 'fetched'), 'hello from the host\n');
        const workers = await kiln(['workers', '--root', suite.root, '--cni-config', conflist]);
        assert.match(workers.stdout, /\tcni \(CNI network "kiln-user-test" from .*user\.conflist\)\t/);
        assert.deepEqual((await readdir(join(suite.work, 'user-ipam', 'kiln-user-test'))).filter((f) => f !== 'lock' && !f.startsWith('last_reserved_ip')), [], 'the lease was freed');
      } finally {
        await execa('ip', ['link', 'del', bridge], { reject: false });
      }
    });

    test('16 networked ops at once: each its own address, all reach the host', async () => {
      const ops: Record<string, unknown> = {};
      const names: string[] = [];
      for (let i = 0; i < 16; i++) {
        const script = `mkdir -p /out/s${i}; ip -4 -o addr show eth0 > /out/s${i}/addr; GW=$(ip route | awk '/^default/ {print $3}'); wget -q -O /out/s${i}/fetched http://$GW:${http.port}/hello.txt`;
        ops[`s${i}`] = shStep(script);
        names.push(`s${i}`);
      }
      ops['all'] = { inputs: names, merge: { inputs: names.map((_, i) => i) } };
      const before = http.requests();
      const { out, run } = await build(ops, 'all', ['--parallelism', '16']);
      assert.equal(run.exitCode, 0, run.stderr);
      const addresses = await Promise.all(names.map(async (s) => /inet (\S+)\//.exec(await read(out, `${s}/addr`))?.[1]));
      assert.equal(new Set(addresses).size, 16, `distinct addresses: ${addresses.join(' ')}`);
      for (const s of names) assert.equal(await read(out, `${s}/fetched`), 'hello from the host\n');
      assert.ok(http.requests() - before >= 16);
    });

    test('two kiln processes on one root at once: 8 networked ops, 8 addresses, all reach the host', { skip: workerId !== 'runc' && 'the bridge and its addresses are the same for both workers' }, async () => {
      const files: string[] = [];
      for (const p of [0, 1]) {
        const ops: Record<string, unknown> = {};
        const names: string[] = [];
        for (let i = 0; i < 4; i++) {
          ops[`p${p}s${i}`] = shStep(`mkdir -p /out/p${p}s${i}; ip -4 -o addr show eth0 > /out/p${p}s${i}/addr; GW=$(ip route | awk '/^default/ {print $3}'); wget -q -O /out/p${p}s${i}/fetched http://$GW:${http.port}/hello.txt; sleep 1`);
          names.push(`p${p}s${i}`);
        }
        ops['all'] = { inputs: names, merge: { inputs: names.map((_, i) => i) } };
        files.push(await write(ops, 'all'));
      }
      const outs = files.map((_, p) => join(suite.work, `two-${p}`));
      const runs = await Promise.all(
        files.map((file, p) => kiln(['build', file, '--root', suite.root, '--local', 'tools=/bin', '--parallelism', '4', '--output', `type=local,dest=${outs[p] ?? ''}`])),
      );
      for (const run of runs) assert.equal(run.exitCode, 0, run.stderr);
      const addresses: string[] = [];
      for (const [p, out] of outs.entries()) {
        for (let i = 0; i < 4; i++) {
          const addr = await read(out, `p${p}s${i}/addr`).catch((err: unknown) => assert.fail(`${String(err)}; the output holds ${JSON.stringify(readdirSync(out))}`));
          addresses.push(/inet (\S+)\//.exec(addr)?.[1] ?? '');
          assert.equal(await read(out, `p${p}s${i}/fetched`), 'hello from the host\n');
        }
      }
      assert.equal(new Set(addresses).size, 8, `distinct addresses across both processes: ${addresses.join(' ')}`);
    });

    test('SIGKILL during a networked op: the next kiln removes the namespace, veth and lease', async () => {
      const file = await write({ nap: shStep(`sleep 60 # ${workerId}`) }, 'nap');
      const child = startKilnProcess(['build', file, '--root', suite.root, '--local', 'tools=/bin', '--output', `type=local,dest=${join(suite.work, 'nap-out')}`, ...suite.workerArgs('build')]);
      const pid = child.pid;
      assert.ok(pid !== undefined);
      const owner = `${pid}-${processStartTime(pid) ?? ''}`;
      // Wait until the namespace is set up (its record has the ADD result) and the container runs.
      let record: { containerId: string; netns: string; result?: { interfaces?: { name: string; sandbox?: string }[] } } | undefined;
      for (let i = 0; i < 300 && record?.result === undefined; i++) {
        await sleep(100);
        const files = (await readdir(join(NETWORK_DIR, 'records')).catch(() => [])).filter((f) => f.startsWith(`${owner}-`) && f.endsWith('.json'));
        if (files[0] !== undefined) record = JSON.parse(await readFile(join(NETWORK_DIR, 'records', files[0]), 'utf8').catch(() => '{}')) as typeof record;
      }
      assert.ok(record?.result !== undefined, 'the killed build had set up a namespace');
      await sleep(1500);
      child.kill('SIGKILL');
      await child;
      const veth = record.result.interfaces?.find((i) => i.sandbox === undefined && i.name !== 'kiln0')?.name;
      assert.ok(veth !== undefined && existsSync(`/sys/class/net/${veth}`), 'the host side veth existed');
      const ipamDir = join(NETWORK_DIR, 'ipam', 'kiln');
      const leases = async () => {
        const found: string[] = [];
        for (const f of await readdir(ipamDir).catch(() => [])) {
          if (f === 'lock' || f.startsWith('last_reserved_ip')) continue;
          if ((await readFile(join(ipamDir, f), 'utf8').catch(() => '')).startsWith(record?.containerId ?? '?')) found.push(f);
        }
        return found;
      };
      assert.equal((await leases()).length, 1, 'the killed build held a lease');

      // A build with no exec op at all (the busybox base, cached) is enough to sweep.
      const cachedOnly = await build({}, 'base');
      assert.equal(cachedOnly.run.exitCode, 0, cachedOnly.run.stderr);
      const left = [...(await readdir(join(NETWORK_DIR, 'records'))), ...(await readdir(join(NETWORK_DIR, 'ns')))].filter((f) => f.startsWith(`${owner}-`));
      assert.deepEqual(left, [], 'no record or namespace of the killed process');
      assert.ok(!existsSync(record.netns), 'the namespace file is gone');
      assert.ok(!existsSync(`/sys/class/net/${veth}`), `veth ${veth} is gone`);
      assert.deepEqual(await leases(), [], 'the lease is freed');
      const { stdout: netns } = await execa('ip', ['netns', 'list']);
      assert.doesNotMatch(netns, new RegExp(owner));
      const { out, run } = await build({ after: shStep(`GW=$(ip route | awk '/^default/ {print $3}'); wget -q -O /out/fetched http://$GW:${http.port}/hello.txt # after kill`) }, 'after');
      assert.equal(run.exitCode, 0, run.stderr);
      assert.equal(await read(out, 'fetched'), 'hello from the host\n', 'the bridge still works');
    });

    test('kiln prune --all removes the namespaces parked for the next kiln (address and veth freed)', async () => {
      const parked = async () => (await readdir(join(NETWORK_DIR, 'records')).catch((): string[] => [])).filter((f) => f.startsWith('parked-'));
      const { run } = await build({ park: shStep(`true # park ${workerId} ${Date.now()}`) }, 'park');
      assert.equal(run.exitCode, 0, run.stderr);
      assert.ok((await parked()).length > 0, 'the build parked its spare namespace');
      const pruned = await kiln(['prune', '--all', '--root', suite.root]);
      assert.equal(pruned.exitCode, 0, pruned.stderr);
      assert.deepEqual(await parked(), []);
    });
  });
}
