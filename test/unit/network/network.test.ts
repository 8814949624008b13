/**
 * The logic of kiln's container networking, without root or real plugins:
 * subnet choice against the host's routes, the containers' resolv.conf, and
 * the CNI protocol (list order, prevResult, DEL in reverse, error objects)
 * against fake plugins written by the test.
 */
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { addNetworkList, delNetworkList, missingPlugins, type NetworkConfigList } from '../../../src/network/cni.js';
import { createNetworkProvider } from '../../../src/network/provider.js';
import { containerResolvConf, parseResolvConf } from '../../../src/network/resolv-conf.js';
import { chooseSubnet, formatCidr, hostRoutes, overlaps, parseCidr } from '../../../src/network/subnet.js';
import { KilnError } from '../../../src/errors.js';

const net = (cidr: string) => {
  const parsed = parseCidr(cidr);
  assert.ok(parsed !== undefined, cidr);
  return parsed;
};

describe('bridge subnet', () => {
  it('parses, normalizes and formats CIDRs', () => {
    assert.equal(formatCidr(net('10.213.7.9/16')), '10.213.0.0/16');
    assert.equal(formatCidr(net('192.168.1.0/24')), '192.168.1.0/24');
    assert.equal(parseCidr('300.1.1.1/8'), undefined);
    assert.equal(parseCidr('10.0.0.0/33'), undefined);
    assert.equal(parseCidr('example'), undefined);
  });

  it('finds overlaps both ways', () => {
    assert.ok(overlaps(net('10.0.0.0/8'), net('10.213.0.0/16')));
    assert.ok(overlaps(net('10.213.5.0/24'), net('10.213.0.0/16')));
    assert.ok(!overlaps(net('10.214.0.0/16'), net('10.213.0.0/16')));
  });

  it('skips candidates a host route overlaps, ignores the default route, and keeps the bridge its own subnet', () => {
    const routes = [
      { iface: 'eth0', net: net('0.0.0.0/0') },
      { iface: 'eth0', net: net('10.213.0.0/16') },
      { iface: 'vpn0', net: net('10.214.128.0/17') },
    ];
    assert.equal(formatCidr(chooseSubnet({ routes, bridge: 'kiln0' })), '10.215.0.0/16');
    assert.equal(formatCidr(chooseSubnet({ routes: [...routes, { iface: 'kiln0', net: net('10.240.0.0/16') }], bridge: 'kiln0' })), '10.240.0.0/16');
    assert.equal(formatCidr(chooseSubnet({ routes: [], bridge: 'kiln0' })), '10.213.0.0/16');
  });

  it('takes a requested subnet unless it clashes with a route', () => {
    const routes = [{ iface: 'eth0', net: net('192.168.0.0/16') }];
    assert.equal(formatCidr(chooseSubnet({ routes, bridge: 'kiln0', requested: '172.30.0.0/16' })), '172.30.0.0/16');
    assert.throws(() => chooseSubnet({ routes, bridge: 'kiln0', requested: '192.168.10.0/24' }), /overlaps the host's route 192\.168\.0\.0\/16 on eth0/);
    assert.throws(() => chooseSubnet({ routes, bridge: 'kiln0', requested: 'ten' }), /--network-cidr "ten"/);
  });

  it("reads the kernel's route table format", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'kiln-routes-'));
    const file = path.join(dir, 'route');
    // 192.0.2.0/24 on eth0 and the default route, as /proc/net/route writes them (little-endian hex).
    await writeFile(
      file,
      'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n' +
        'eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n' +
        'eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n',
    );
    const routes = await hostRoutes(file);
    assert.deepEqual(
      routes.map((r) => `${r.iface} ${formatCidr(r.net)}`),
      ['eth0 0.0.0.0/0', 'eth0 192.0.2.0/24'],
    );
    await rm(dir, { recursive: true });
  });
});

describe("containers' resolv.conf", () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'kiln-resolv-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));
  const file = async (name: string, text: string) => {
    const p = path.join(dir, name);
    await writeFile(p, text);
    return p;
  };

  it("keeps the host's file when its nameservers are reachable from a namespace", async () => {
    const host = await file('plain', 'search example.internal\nnameserver 192.0.2.53\noptions ndots:2\n');
    assert.equal(await containerResolvConf({ hostFile: host, upstreamFiles: [] }), 'search example.internal\nnameserver 192.0.2.53\noptions ndots:2\n');
  });

  it("replaces a loopback stub resolver with the upstream servers it uses", async () => {
    const host = await file('stub', 'nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n');
    const upstream = await file('upstream', 'nameserver 192.0.2.1\nnameserver 192.0.2.2\n');
    const text = await containerResolvConf({ hostFile: host, upstreamFiles: [path.join(dir, 'missing'), upstream] });
    assert.deepEqual(parseResolvConf(text).nameservers, ['192.0.2.1', '192.0.2.2']);
    assert.match(text, /^options edns0 trust-ad$/m);
    assert.match(text, /^search lan$/m);
    assert.doesNotMatch(text, /127\.0\.0\.53/);
  });

  it('drops loopback servers but keeps the others of a mixed list', async () => {
    const host = await file('mixed', 'nameserver 127.0.0.1\nnameserver 192.0.2.9\n');
    assert.deepEqual(parseResolvConf(await containerResolvConf({ hostFile: host, upstreamFiles: [] })).nameservers, ['192.0.2.9']);
  });

  it('fails naming the file and the fix when only loopback servers are known', async () => {
    const host = await file('only-lo', 'nameserver 127.0.0.53\n');
    await assert.rejects(containerResolvConf({ hostFile: host, upstreamFiles: [] }), (err: unknown) => {
      assert.ok(err instanceof KilnError);
      assert.equal(err.code, 'E_NETWORK');
      assert.match(err.message, /only-lo lists only loopback nameservers \(127\.0\.0\.53\)/);
      assert.match(err.message, /--resolv-conf FILE/);
      return true;
    });
  });
});

describe('CNI invocation', () => {
  let dir = '';
  let log = '';
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'kiln-cni-'));
    log = path.join(dir, 'calls.log');
    // A plugin that records what it was given and answers with a result naming itself.
    const plugin = (name: string, fail = false) => `#!${process.execPath}
const fs = require('node:fs');
const input = JSON.parse(fs.readFileSync(0, 'utf8'));
fs.appendFileSync(${JSON.stringify(log)}, JSON.stringify({ plugin: ${JSON.stringify(name)}, command: process.env.CNI_COMMAND, id: process.env.CNI_CONTAINERID, netns: process.env.CNI_NETNS, ifname: process.env.CNI_IFNAME, path: process.env.CNI_PATH, name: input.name, version: input.cniVersion, prev: input.prevResult ?? null }) + '\\n');
if (${fail} && process.env.CNI_COMMAND === 'ADD') { process.stdout.write(JSON.stringify({ code: 11, msg: 'no addresses left', details: 'range is full' })); process.exit(1); }
process.stdout.write(JSON.stringify({ cniVersion: input.cniVersion, ips: [{ address: '10.9.0.2/16' }], by: ${JSON.stringify(name)} }));
`;
    for (const [name, fail] of [['first', false], ['second', false], ['broken', true]] as const) {
      await writeFile(path.join(dir, name), plugin(name, fail));
      await chmod(path.join(dir, name), 0o755);
    }
  });
  after(() => rm(dir, { recursive: true, force: true }));
  const calls = async () => {
    const text = await readFile(log, 'utf8').catch(() => '');
    await rm(log, { force: true });
    return text
      .trim()
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  };
  const list: NetworkConfigList = { cniVersion: '1.0.0', name: 'testnet', plugins: [{ type: 'first', extra: 1 }, { type: 'second' }] };
  const attachment = { containerId: 'kiln-1-2-3', netns: '/run/test/ns', ifname: 'eth0' };

  it('runs ADD in order, each plugin given the previous result, and DEL in reverse with the final result', async () => {
    const runtime = { binDirs: [path.join(dir, 'nowhere'), dir] };
    const result = await addNetworkList(runtime, list, attachment);
    assert.equal(result['by'], 'second');
    const added = await calls();
    assert.deepEqual(
      added.map((c) => [c['plugin'], c['command'], c['id'], c['netns'], c['ifname'], c['name'], c['version']]),
      [
        ['first', 'ADD', 'kiln-1-2-3', '/run/test/ns', 'eth0', 'testnet', '1.0.0'],
        ['second', 'ADD', 'kiln-1-2-3', '/run/test/ns', 'eth0', 'testnet', '1.0.0'],
      ],
    );
    assert.equal(added[0]?.['prev'], null);
    assert.equal((added[1]?.['prev'] as Record<string, unknown>)['by'], 'first');
    assert.equal(added[0]?.['path'], runtime.binDirs.join(':'));
    await delNetworkList(runtime, list, attachment, result);
    const deleted = await calls();
    assert.deepEqual(deleted.map((c) => [c['plugin'], c['command']]), [['second', 'DEL'], ['first', 'DEL']]);
    assert.ok(deleted.every((c) => (c['prev'] as Record<string, unknown>)['by'] === 'second'));
  });

  it("reports a plugin's error object in one line, naming the plugin", async () => {
    const runtime = { binDirs: [dir] };
    await assert.rejects(addNetworkList(runtime, { ...list, plugins: [{ type: 'first' }, { type: 'broken' }] }, attachment), /CNI plugin "broken" failed on ADD for kiln-1-2-3: no addresses left: range is full/);
    await calls();
  });

  it('says which plugins are missing, and never looks outside the bin dirs', async () => {
    const runtime = { binDirs: [dir] };
    assert.deepEqual(await missingPlugins(runtime, { ...list, plugins: [{ type: 'first' }, { type: 'bridge' }, { type: '../first' }] }), ['bridge', '../first']);
    await assert.rejects(addNetworkList(runtime, { ...list, plugins: [{ type: 'bridge' }] }, attachment), /CNI plugin "bridge" was not found in .*install containernetworking-plugins or pass --cni-bin-dir/);
  });
});

describe('network providers', () => {
  it('none gives loopback and host the host network, with no set-up', async () => {
    const none = createNetworkProvider({ choice: 'none', root: '/nonexistent' });
    assert.deepEqual(await none.acquire(), { kind: 'loopback' });
    assert.equal((await none.status()).provider, 'none');
    const host = createNetworkProvider({ choice: 'host', root: '/nonexistent' });
    assert.deepEqual(await host.acquire(), { kind: 'host' });
    await none.close();
    await host.close();
  });

  it('auto falls back to loopback with the reason when the plugins are missing; cni refuses', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'kiln-provider-'));
    try {
      const options = { root: dir, dir: path.join(dir, 'net'), cniBinDirs: [path.join(dir, 'no-plugins')] };
      const auto = createNetworkProvider({ ...options, choice: 'auto' });
      const status = await auto.status();
      assert.equal(status.provider, 'none');
      assert.match(status.unavailable ?? '', /CNI plugins .*bridge.* not found in .*no-plugins/);
      const network = await auto.acquire();
      assert.equal(network.kind, 'loopback');
      assert.match(network.kind === 'loopback' ? (network.unavailable ?? '') : '', /not found/);
      const cni = createNetworkProvider({ ...options, choice: 'cni' });
      await assert.rejects(cni.acquire(), (err: unknown) => err instanceof KilnError && err.code === 'E_NETWORK' && /install containernetworking-plugins/.test(err.message));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
