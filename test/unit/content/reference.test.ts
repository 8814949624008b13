import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatReference, parseReference } from '../../../src/content/reference.js';
import { ERROR_CODES, KilnError } from '../../../src/errors.js';

const DIGEST = `sha256:${'ab'.repeat(32)}`;

describe('parseReference', () => {
  it('normalises names the way docker pull does', () => {
    const cases: [string, string][] = [
      ['busybox', 'docker.io/library/busybox:latest'],
      ['busybox:1.36', 'docker.io/library/busybox:1.36'],
      ['me/app', 'docker.io/me/app:latest'],
      ['docker.io/busybox', 'docker.io/library/busybox:latest'],
      ['index.docker.io/library/busybox', 'docker.io/library/busybox:latest'],
      ['ghcr.io/org/team/app:v1', 'ghcr.io/org/team/app:v1'],
      ['localhost/app', 'localhost/app:latest'],
      ['localhost:5000/app', 'localhost:5000/app:latest'],
      ['127.0.0.1:5000/a/b:1.0', '127.0.0.1:5000/a/b:1.0'],
      ['[::1]:5000/app', '[::1]:5000/app:latest'],
      ['Registry/app', 'Registry/app:latest'],
      [`busybox@${DIGEST}`, `docker.io/library/busybox@${DIGEST}`],
      [`host:5000/a/b@${DIGEST}`, `host:5000/a/b@${DIGEST}`],
      [`busybox:1.36@${DIGEST}`, `docker.io/library/busybox:1.36@${DIGEST}`],
      ['me/a.b__c-d--e/f_g', 'docker.io/me/a.b__c-d--e/f_g:latest'],
      ['my-app.v2', 'docker.io/library/my-app.v2:latest'],
    ];
    for (const [text, full] of cases) assert.equal(formatReference(parseReference(text)), full, text);
  });

  it('splits domain, repository, tag and digest', () => {
    assert.deepEqual(parseReference('localhost:5000/team/app:1.0'), { domain: 'localhost:5000', repository: 'team/app', tag: '1.0' });
    assert.deepEqual(parseReference(`app@${DIGEST}`), { domain: 'docker.io', repository: 'library/app', digest: DIGEST });
    assert.deepEqual(parseReference(`app:v1@${DIGEST}`), { domain: 'docker.io', repository: 'library/app', tag: 'v1', digest: DIGEST });
  });

  it('refuses what Docker refuses, naming the text and the rule', () => {
    const cases: [string, RegExp][] = [
      ['', /empty/],
      ['Busybox', /must be lowercase/],
      ['docker.io/Me/app', /must be lowercase/],
      ['app:', /not a valid tag/],
      ['app:-x', /not a valid tag/],
      [`app:${'t'.repeat(129)}`, /not a valid tag/],
      ['app@sha256:abc', /not a digest/],
      [`app@sha512:${'a'.repeat(128)}`, /only kind kiln supports/],
      [`app@sha256:${'AB'.repeat(32)}`, /only kind kiln supports/],
      ['a//b', /not a valid path component/],
      ['ex.com/', /repository name is empty/],
      ['-app', /not a valid path component/],
      ['app_', /not a valid path component/],
      ['bad_host.com:5000/app', /not a valid registry host/],
      ['ab'.repeat(32), /image ID/],
      [`x.io/${'a'.repeat(260)}`, /longer than 255/],
    ];
    for (const [text, why] of cases) {
      assert.throws(
        () => parseReference(text),
        (err: unknown) => {
          assert.ok(err instanceof KilnError, text);
          assert.equal(err.code, ERROR_CODES.IMAGE);
          assert.match(err.message, why, text);
          assert.ok(err.message.includes(JSON.stringify(text)), err.message);
          return true;
        },
      );
    }
  });

  it('round-trips what it formats', () => {
    for (const text of ['docker.io/library/busybox:latest', `host:5000/a/b@${DIGEST}`, `ghcr.io/x/y:1@${DIGEST}`]) {
      assert.equal(formatReference(parseReference(text)), text);
    }
  });
});
