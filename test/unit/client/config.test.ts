import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DEFAULT_CONFIG, defaultConfigPaths, loadConfig, parseConfig } from '../../../src/client/config.js';
import { hostScheme, isLoopbackHost } from '../../../src/content/registry/hosts.js';
import { ERROR_CODES, KilnError } from '../../../src/errors.js';

const FILE = '/config/kiln.toml';

/** Asserts that parsing `text` fails with E_CONFIG and exactly `message`. */
function refuses(text: string, message: string): void {
  assert.throws(
    () => parseConfig(text, FILE),
    (err: unknown) => {
      assert.ok(err instanceof KilnError, String(err));
      assert.equal(err.code, ERROR_CODES.CONFIG);
      assert.equal(err.message, message);
      return true;
    },
  );
}

describe('parseConfig', () => {
  it('reads [network]: the provider and its settings, paths relative to the file', () => {
    const config = parseConfig(
      ['[network]', 'provider = "cni"', 'cidr = "10.240.0.0/16"', 'cni-config = "cni/my.conflist"', 'cni-bin-dirs = ["/opt/cni/bin", "plugins"]', 'resolv-conf = "/etc/kiln/resolv.conf"'].join('\n'),
      FILE,
    );
    assert.deepEqual(config.network, {
      choice: 'cni',
      cidr: '10.240.0.0/16',
      cniConfig: '/config/cni/my.conflist',
      cniBinDirs: ['/opt/cni/bin', '/config/plugins'],
      resolvConf: '/etc/kiln/resolv.conf',
    });
    assert.deepEqual(parseConfig('', FILE).network, {});
    refuses('[network]\nprovider = "bridge"', '/config/kiln.toml: network.provider: "bridge" is not one of auto, cni, host, none');
    refuses('[network]\nmode = "cni"', '/config/kiln.toml: network.mode: unknown key ([network] takes provider, cidr, cni-config, cni-bin-dirs, resolv-conf)');
  });

  it('reads registry tables as buildkitd.toml has them, paths relative to the file', () => {
    const config = parseConfig(
      [
        '[registry."docker.io"]',
        'mirrors = ["127.0.0.1:5001", "mirror.example.com"]',
        '',
        '[registry."127.0.0.1:5001"]',
        'http = true',
        '',
        '[registry."registry.lan:5443"]',
        'ca = ["certs/lan.pem", "/etc/ssl/other.pem"]',
        'insecure = false',
        '',
        '[registry."[::1]:5000"]',
        'http = false',
      ].join('\n'),
      FILE,
    );
    assert.deepEqual(config, {
      file: FILE,
      registry: {
        'docker.io': { mirrors: ['127.0.0.1:5001', 'mirror.example.com'] },
        '127.0.0.1:5001': { http: true },
        'registry.lan:5443': { ca: ['/config/certs/lan.pem', '/etc/ssl/other.pem'], insecure: false },
        '[::1]:5000': { http: false },
      },
      network: {},
      history: {},
    });
  });

  it('files Docker Hub under docker.io whichever name it is given, and an empty file is the defaults', () => {
    assert.deepEqual(parseConfig('[registry."index.docker.io"]\nmirrors = ["m:1"]\n', FILE).registry, { 'docker.io': { mirrors: ['m:1'] } });
    assert.deepEqual(parseConfig('', FILE), { file: FILE, registry: {}, network: {}, history: {} });
    refuses('[registry."docker.io"]\nhttp = false\n[registry."registry-1.docker.io"]\nhttp = true\n', `${FILE}: registry."registry-1.docker.io": docker.io is configured twice (docker.io, index.docker.io and registry-1.docker.io are one host)`);
  });

  it('names the file and the key of an unknown key or a bad value', () => {
    refuses('[registery]\n', `${FILE}: registery: unknown key (kiln.toml has: registry, network, history)`);
    refuses('[registry."docker.io"]\nmirror = ["m"]\n', `${FILE}: registry."docker.io".mirror: unknown key (a registry takes mirrors, http, insecure, ca)`);
    refuses('[registry."docker.io"]\nhttp = "yes"\n', `${FILE}: registry."docker.io".http: expected true or false`);
    refuses('[registry."docker.io"]\nmirrors = "m"\n', `${FILE}: registry."docker.io".mirrors: expected a list of non-empty strings`);
    refuses('[registry."docker.io"]\nca = [1]\n', `${FILE}: registry."docker.io".ca: expected a list of non-empty strings`);
    refuses('registry = 1\n', `${FILE}: registry: expected a table of hosts, such as [registry."docker.io"]`);
    refuses('[registry]\n"docker.io" = true\n', `${FILE}: registry."docker.io": expected a table with mirrors, http, insecure or ca`);
  });

  it('wants hosts as HOST[:PORT], without a scheme; a mirror may add a repository path, as in buildkitd.toml', () => {
    refuses(
      '[registry."docker.io"]\nmirrors = ["http://127.0.0.1:5000"]\n',
      `${FILE}: registry."docker.io".mirrors: "http://127.0.0.1:5000": give HOST[:PORT] without a scheme (for plain HTTP, set http = true under [registry."HOST"])`,
    );
    assert.deepEqual(parseConfig('[registry."docker.io"]\nmirrors = ["harbor.lan/hub-proxy/", "m:5000/a/b", "plain:1/"]\n', FILE).registry, {
      'docker.io': { mirrors: ['harbor.lan/hub-proxy', 'm:5000/a/b', 'plain:1'] },
    });
    refuses('[registry."docker.io"]\nmirrors = ["host/Path"]\n', `${FILE}: registry."docker.io".mirrors: "host/Path": the path after the host must be repository path components (lowercase letters, digits, ".", "_", "-")`);
    refuses('[registry."docker.io"]\nmirrors = ["bad host/path"]\n', `${FILE}: registry."docker.io".mirrors: "bad host" is not HOST[:PORT]`);
    refuses('[registry."host/path"]\n', `${FILE}: registry."host/path": "host/path" is not HOST[:PORT]`);
    refuses('[registry."https://ghcr.io"]\n', `${FILE}: registry."https://ghcr.io": "https://ghcr.io": give HOST[:PORT] without a scheme (for plain HTTP, set http = true under [registry."HOST"])`);
  });

  it('says where TOML is broken', () => {
    assert.throws(
      () => parseConfig('[registry."docker.io"\nhttp = true\n', FILE),
      (err: unknown) => err instanceof KilnError && err.code === ERROR_CODES.CONFIG && /^\/config\/kiln\.toml is not valid TOML: .* \(line 1, column \d+\)$/.test(err.message),
    );
  });
});

describe('loadConfig', () => {
  let dir: string;
  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-config-'));
  });
  after(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('reads $XDG_CONFIG_HOME/kiln/kiln.toml, else /etc/kiln/kiln.toml, else has the defaults', async () => {
    const xdg = path.join(dir, 'xdg');
    assert.deepEqual(defaultConfigPaths({ XDG_CONFIG_HOME: xdg }), [path.join(xdg, 'kiln', 'kiln.toml'), '/etc/kiln/kiln.toml']);
    assert.deepEqual(defaultConfigPaths({}), [path.join(os.homedir(), '.config', 'kiln', 'kiln.toml'), '/etc/kiln/kiln.toml']);
    await fs.mkdir(path.join(xdg, 'kiln'), { recursive: true });
    await fs.writeFile(path.join(xdg, 'kiln', 'kiln.toml'), '[registry."ghcr.io"]\ninsecure = true\n');
    assert.deepEqual(loadConfig({ env: { XDG_CONFIG_HOME: xdg } }), { file: path.join(xdg, 'kiln', 'kiln.toml'), registry: { 'ghcr.io': { insecure: true } }, network: {}, history: {} });
    // Only when this machine has no /etc/kiln/kiln.toml is the default certain.
    const system = await fs.access('/etc/kiln/kiln.toml').then(
      () => true,
      () => false,
    );
    if (!system) assert.equal(loadConfig({ env: { XDG_CONFIG_HOME: path.join(dir, 'none') } }), DEFAULT_CONFIG);
  });

  it('reads --config FILE, which must exist', async () => {
    const file = path.join(dir, 'given.toml');
    await fs.writeFile(file, '[registry."localhost:5000"]\nhttp = true\n');
    assert.deepEqual(loadConfig({ file }).registry, { 'localhost:5000': { http: true } });
    assert.throws(
      () => loadConfig({ file: path.join(dir, 'absent.toml') }),
      (err: unknown) => err instanceof KilnError && err.code === ERROR_CODES.CONFIG && err.message === `cannot read the config file ${path.join(dir, 'absent.toml')}: no such file`,
    );
  });
});

describe('registry hosts', () => {
  it('knows loopback hosts: localhost, 127.0.0.0/8, ::1, with or without a port', () => {
    for (const host of ['localhost', 'localhost:5000', 'LOCALHOST:1', '127.0.0.1', '127.0.0.1:5000', '127.1.2.3:80', '[::1]:5000', '[::1]', '::1']) {
      assert.ok(isLoopbackHost(host), host);
    }
    for (const host of ['docker.io', '10.0.0.1:5000', '128.0.0.1', '127.0.0.1.example.com', 'localhost.example.com:5000', '[::2]:5000', '127.0.0.256']) {
      assert.ok(!isLoopbackHost(host), host);
    }
  });

  it('picks plain HTTP when told, HTTPS then HTTP for loopback hosts left alone and insecure ones, HTTPS otherwise', () => {
    assert.equal(hostScheme('registry.lan:5000', undefined, true), 'http');
    assert.equal(hostScheme('registry.lan:5000', { http: true }, false), 'http');
    assert.equal(hostScheme('registry.lan:5000', undefined, false), 'https');
    assert.equal(hostScheme('127.0.0.1:5000', undefined, false), 'https-then-http');
    assert.equal(hostScheme('localhost:5000', { mirrors: [] }, false), 'https-then-http');
    assert.equal(hostScheme('127.0.0.1:5000', { http: false }, false), 'https');
    // CAs mean TLS; insecure means unverified TLS, then plain HTTP (buildkitd's meaning), on any host.
    assert.equal(hostScheme('127.0.0.1:5000', { ca: ['/ca.pem'] }, false), 'https');
    assert.equal(hostScheme('registry.lan:5000', { insecure: true }, false), 'https-then-http');
  });
});
