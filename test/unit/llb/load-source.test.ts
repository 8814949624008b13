import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadDefinition } from '../../../src/llb/load.js';
import { assertProblem, withOp } from './problems.js';

const source = (identifier: unknown, attrs?: unknown): unknown => withOp({ source: attrs === undefined ? { identifier } : { identifier, attrs } });
const ID = 'ops.x.source.identifier';
const attr = (key: string): string => `ops.x.source.attrs[${JSON.stringify(key)}]`;
const HEX = '0123456789abcdef'.repeat(4);

describe('source ops', () => {
  it('accepts every supported scheme', () => {
    for (const identifier of [
      'docker-image://alpine:3.20',
      `oci-layout://store@sha256:${HEX}`,
      'oci-layout://localhost:5000/app:v1',
      'local://context',
      'http://example.com/a',
      'https://example.com/a.tar.gz',
      'git://example.com/repo.git#main',
      'git+https://example.com/repo.git',
      'git+file:///srv/repo.git',
    ]) {
      const def = loadDefinition(source(identifier));
      assert.deepEqual(def.ops.get('x')?.body, { kind: 'source', source: { identifier, attrs: {} } }, identifier);
    }
  });

  it('names the supported schemes when the scheme is not one', () => {
    assertProblem(source('ftp://example.com/a'), ID, 'must start with docker-image://, oci-layout://, local://, http://, https://, git://, git+https:// or git+file://');
    assertProblem(source('alpine'), ID, 'unsupported source "alpine"');
    // A password in a URL of a scheme kiln does not know is still masked (ssh+git:// is no git scheme).
    assertProblem(source('ssh+git://me:s3cret@example.com/r.git'), ID, 'unsupported source "ssh+git://***@example.com/r.git"');
  });

  it('requires the identifier, as a non-empty string', () => {
    assertProblem(withOp({ source: {} }), ID, 'required field is missing');
    assertProblem(source(''), ID, 'must not be empty');
    assertProblem(source(7), ID, 'expected a string, got number 7');
  });

  it('requires something after the scheme', () => {
    assertProblem(source('local://'), ID, 'local:// needs a name');
    assertProblem(source('docker-image://'), ID, 'nothing follows "docker-image://"');
  });

  it('checks oci-layout references and http URLs', () => {
    assertProblem(source('oci-layout://store'), ID, 'oci-layout://NAME:TAG or oci-layout://NAME@sha256:<digest>');
    assertProblem(source('oci-layout://store@sha256:abc'), ID, 'oci-layout://NAME:TAG');
    assertProblem(source('https://exa mple.com/'), ID, 'is not a valid URL');
  });

  it('requires attr values to be strings', () => {
    assertProblem(source('local://ctx', { 'local.sharedkeyhint': 1 }), attr('local.sharedkeyhint'), 'expected a string');
    assertProblem(source('local://ctx', []), 'ops.x.source.attrs', 'expected an object');
  });

  it('rejects attrs of another scheme, with a hint or the known list', () => {
    assertProblem(source('local://ctx', { 'local.excludepattern': '[]' }), attr('local.excludepattern'), 'did you mean "local.excludepatterns"?');
    assertProblem(source('docker-image://alpine', { 'http.checksum': 'x' }), attr('http.checksum'), 'unknown attr "http.checksum" for docker-image:// sources (known: image.resolvemode, image.recordtype, image.layerlimit)');
  });

  it('accepts the attrs of each scheme', () => {
    const cases: [string, Record<string, string>][] = [
      ['docker-image://alpine', { 'image.resolvemode': 'local', 'image.recordtype': 'internal', 'image.layerlimit': '3' }],
      ['oci-layout://s:t', { 'oci.session': 's1', 'oci.store': 'main', 'image.recordtype': 'x' }],
      [
        'local://ctx',
        {
          'local.includepattern': '["a"]',
          'local.includepatterns': '["b"]',
          'local.excludepatterns': '[]',
          'local.followpaths': '["c","d"]',
          'local.sharedkeyhint': 'k',
          'local.unique': 'u',
          'local.differ': 'metadata',
        },
      ],
      ['https://x.org/f', { 'http.checksum': `sha256:${HEX}`, 'http.filename': 'f.bin', 'http.perm': '755', 'http.uid': '0', 'http.gid': '1000' }],
      [
        'git://x.org/r',
        {
          'git.keepgitdir': 'false',
          'git.fullurl': 'https://x.org/r',
          'git.authtokensecret': 't',
          'git.authheadersecret': 'h',
          'git.knownsshhosts': 'k',
          'git.mountsshsock': 's',
        },
      ],
    ];
    for (const [identifier, attrs] of cases) {
      assert.deepEqual(loadDefinition(source(identifier, attrs)).ops.get('x')?.body, { kind: 'source', source: { identifier, attrs } });
    }
  });

  it('checks attr values', () => {
    const cases: [string, string, string, string][] = [
      ['docker-image://a', 'image.resolvemode', 'always', 'must be "default", "pull" or "local", got "always"'],
      ['docker-image://a', 'image.layerlimit', '-1', 'must be a non-negative integer'],
      ['local://ctx', 'local.includepattern', '*.go', 'must be a JSON array of strings'],
      ['local://ctx', 'local.excludepatterns', '[1]', 'must be a JSON array of strings'],
      ['local://ctx', 'local.followpaths', '{}', 'must be a JSON array of strings'],
      ['local://ctx', 'local.differ', 'all', 'must be "none" or "metadata"'],
      ['https://x.org/f', 'http.checksum', 'sha256:abc', 'must be sha256:<64 lowercase hex digits>'],
      ['https://x.org/f', 'http.perm', '0999', 'must be an octal mode'],
      ['https://x.org/f', 'http.uid', 'root', 'must be a non-negative integer'],
      ['https://x.org/f', 'http.gid', '1.5', 'must be a non-negative integer'],
      ['https://x.org/f', 'http.filename', 'a/b', 'must be a file name without "/"'],
      ['git://x.org/r', 'git.keepgitdir', 'yes', 'must be "true" or "false"'],
    ];
    for (const [identifier, key, value, fragment] of cases) assertProblem(source(identifier, { [key]: value }), attr(key), fragment);
  });
});
