import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatPlatform, platformMatches, selectPlatform } from '../../../src/content/platform.js';
import { type Descriptor, MEDIA_TYPES } from '../../../src/content/types.js';
import { sha256 } from '../../../src/digest.js';

let entries = 0;
const entry = (platform: Descriptor['platform'], mediaType: string = MEDIA_TYPES.ociManifest): Descriptor => ({
  mediaType,
  digest: sha256(`entry ${entries++}`),
  size: 1,
  ...(platform === undefined ? {} : { platform }),
});

describe('platform matching', () => {
  it('compares os and architecture, and the variant when one is wanted', () => {
    assert.ok(platformMatches({ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'amd64' }));
    assert.ok(!platformMatches({ os: 'linux', architecture: 'amd64' }, { os: 'windows', architecture: 'amd64' }));
    assert.ok(!platformMatches({ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64' }));
    assert.ok(platformMatches({ os: 'linux', architecture: 'arm' }, { os: 'linux', architecture: 'arm', variant: 'v7' }));
    assert.ok(!platformMatches({ os: 'linux', architecture: 'arm', variant: 'v6' }, { os: 'linux', architecture: 'arm', variant: 'v7' }));
    assert.ok(platformMatches({ os: 'linux', architecture: 'x86_64' }, { os: 'linux', architecture: 'amd64' }));
  });

  it('treats arm64 without a variant as arm64/v8', () => {
    assert.ok(platformMatches({ os: 'linux', architecture: 'arm64' }, { os: 'linux', architecture: 'arm64', variant: 'v8' }));
    assert.ok(platformMatches({ os: 'linux', architecture: 'arm64', variant: 'v8' }, { os: 'linux', architecture: 'arm64' }));
    assert.ok(platformMatches({ os: 'linux', architecture: 'aarch64' }, { os: 'linux', architecture: 'arm64' }));
    assert.ok(!platformMatches({ os: 'linux', architecture: 'arm64' }, { os: 'linux', architecture: 'arm64', variant: 'v9' }));
  });

  it('chooses the first usable entry of an index, skipping attestations and entries without a platform', () => {
    const attestation = entry({ os: 'linux', architecture: 'amd64' }, 'application/vnd.in-toto+json');
    const amd64 = entry({ os: 'linux', architecture: 'amd64' });
    const amd64Again = entry({ os: 'linux', architecture: 'amd64', variant: 'v2' });
    const list = [entry(undefined), attestation, amd64, amd64Again];
    assert.equal(selectPlatform(list, { os: 'linux', architecture: 'amd64' }), amd64);
    assert.equal(selectPlatform(list, { os: 'linux', architecture: 'amd64', variant: 'v2' }), amd64Again);
    assert.equal(selectPlatform(list, { os: 'linux', architecture: 'riscv64' }), undefined);
  });

  it('formats platforms as users write them', () => {
    assert.equal(formatPlatform({ os: 'linux', architecture: 'arm64', variant: 'v8' }), 'linux/arm64/v8');
    assert.equal(formatPlatform({ os: 'linux', architecture: 'amd64' }), 'linux/amd64');
  });
});
