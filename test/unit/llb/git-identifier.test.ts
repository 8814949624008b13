import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isGitSpecProblem, parseGitSource } from '../../../src/llb/git-identifier.js';
import { maskUrlCredentials } from '../../../src/llb/op-name.js';
import { DefinitionBuilder } from '../../../src/llb/builder.js';
import { loadDefinition } from '../../../src/llb/load.js';
import { ValidationError } from '../../../src/errors.js';

describe('parseGitSource', () => {
  it('reads git://HOST/PATH#REF:SUBDIR as the git protocol', () => {
    assert.deepEqual(parseGitSource('git://example.com:9418/r.git#v1.2:docs/api/', undefined), {
      url: 'git://example.com:9418/r.git',
      transport: 'git',
      ref: 'v1.2',
      subdir: 'docs/api',
    });
  });

  it('takes the fetched URL from git.fullurl, in each form BuildKit writes', () => {
    const cases: [string, string, string][] = [
      ['https://example.com/r.git', 'https://example.com/r.git', 'http'],
      ['http://127.0.0.1:8080/r.git', 'http://127.0.0.1:8080/r.git', 'http'],
      ['ssh://git@example.com:2222/srv/r.git', 'ssh://git@example.com:2222/srv/r.git', 'ssh'],
      ['git@example.com:org/r.git', 'git@example.com:org/r.git', 'ssh'],
      ['git://example.com/r.git', 'git://example.com/r.git', 'git'],
    ];
    for (const [full, url, transport] of cases) {
      assert.deepEqual(parseGitSource('git://example.com/r.git#main', full), { url, transport, ref: 'main' }, full);
    }
  });

  it('maps git+https:// and git+file:// to the URL after the prefix; no fragment means HEAD', () => {
    assert.deepEqual(parseGitSource('git+https://example.com/r.git', undefined), { url: 'https://example.com/r.git', transport: 'http' });
    assert.deepEqual(parseGitSource('git+file:///srv/r.git#:sub', undefined), { url: 'file:///srv/r.git', transport: 'file', subdir: 'sub' });
  });

  it('takes user:password out of an http URL, to send as a header', () => {
    assert.deepEqual(parseGitSource('git+https://me:p%40ss@example.com/r.git#main', undefined), {
      url: 'https://example.com/r.git',
      transport: 'http',
      userinfo: { user: 'me', password: 'p@ss' },
      ref: 'main',
    });
  });

  it('refuses what git would misread, naming the field', () => {
    const problems: [string, string | undefined, string, RegExp][] = [
      ['git://example.com/r#-upload-pack=x', undefined, 'identifier', /not a valid git ref/],
      ['git://example.com/r#a..b', undefined, 'identifier', /not a valid git ref/],
      ['git://example.com/r#main:../x', undefined, 'identifier', /must not contain "\.\."/],
      ['git://example.com/r#main', '-oProxyCommand=x:y', 'git.fullurl', /must not start with "-"/],
      ['git://example.com/r#main', 'ssh://-oProxyCommand=x/y', 'git.fullurl', /must not start with "-"/],
      ['git://example.com/r#main', 'ftp://example.com/r', 'git.fullurl', /not a git transport/],
      ['git://example.com/r#main', 'ssh://u:secret@example.com/r', 'git.fullurl', /password in a ssh:\/\/ URL/],
      ['git+https://example.com/r', 'https://example.com/r', 'git.fullurl', /for git:\/\/ identifiers only/],
      ['git://', undefined, 'identifier', /nothing follows/],
      ['git://example.com/', undefined, 'identifier', /names no repository path/],
    ];
    for (const [identifier, full, field, message] of problems) {
      const parsed = parseGitSource(identifier, full);
      assert.ok(isGitSpecProblem(parsed), `${identifier} ${full ?? ''} parsed`);
      assert.equal(parsed.field, field, identifier);
      assert.match(parsed.message, message);
      assert.doesNotMatch(parsed.message, /secret/);
    }
  });
});

describe('maskUrlCredentials', () => {
  it('hides user:password in URLs, also inside text', () => {
    assert.equal(maskUrlCredentials('git+https://me:pw@example.com/r.git#main'), 'git+https://***@example.com/r.git#main');
    assert.equal(maskUrlCredentials("fatal: unable to access 'https://a:b@h/r/': 403"), "fatal: unable to access 'https://***@h/r/': 403");
    assert.equal(maskUrlCredentials('ssh://git@example.com/r'), 'ssh://git@example.com/r');
  });
});

describe('the loader on git sources', () => {
  const load = (identifier: string, attrs: Record<string, string> = {}) =>
    loadDefinition({ version: 1, ops: { g: { source: { identifier, attrs } } }, result: 'g' });

  it('accepts every form the spec and BuildKit write', () => {
    load('git://example.com/r.git#main:sub', { 'git.fullurl': 'git@example.com:r.git', 'git.mountsshsock': 'default', 'git.knownsshhosts': 'example.com ssh-ed25519 AAAA' });
    load('git+https://example.com/r.git#0123456789abcdef0123456789abcdef01234567', { 'git.authtokensecret': 'tok' });
    load('git+file:///srv/r.git');
  });

  it('reports a bad git.fullurl at its attr path', () => {
    assert.throws(
      () => load('git://example.com/r#main', { 'git.fullurl': 'ftp://x/y' }),
      (err: unknown) => err instanceof ValidationError && err.diagnostics[0]?.path === 'ops.g.source.attrs["git.fullurl"]',
    );
    assert.throws(
      () => load('git://example.com/r#--bad'),
      (err: unknown) => err instanceof ValidationError && err.diagnostics[0]?.path === 'ops.g.source.identifier',
    );
  });
});

describe('DefinitionBuilder.git', () => {
  const sourceOf = (remote: string, options: Parameters<DefinitionBuilder['git']>[2] = {}) => {
    const b = new DefinitionBuilder();
    return (b.build(b.git('g', remote, options)).ops as Record<string, { source: unknown }>)['g']?.source;
  };

  it('writes https and file URLs as git+ identifiers, with ref and subdir after #', () => {
    assert.deepEqual(sourceOf('https://example.com/r.git', { ref: 'v1', subdir: 'docs' }), { identifier: 'git+https://example.com/r.git#v1:docs' });
    assert.deepEqual(sourceOf('file:///srv/r.git'), { identifier: 'git+file:///srv/r.git' });
  });

  it('writes ssh and http remotes as BuildKit does: git://HOST/PATH with git.fullurl', () => {
    assert.deepEqual(sourceOf('git@example.com:org/r.git', { ref: 'main', sshId: 'key', knownSshHosts: 'example.com ssh-ed25519 AAAA' }), {
      identifier: 'git://example.com/org/r.git#main',
      attrs: { 'git.fullurl': 'git@example.com:org/r.git', 'git.mountsshsock': 'key', 'git.knownsshhosts': 'example.com ssh-ed25519 AAAA' },
    });
    // An absolute path after HOST: gives one slash, as BuildKit's path.Join("/", path) does.
    assert.deepEqual(sourceOf('git@example.com:/srv/r.git'), { identifier: 'git://example.com/srv/r.git', attrs: { 'git.fullurl': 'git@example.com:/srv/r.git' } });
    assert.deepEqual(sourceOf('http://127.0.0.1:8080/r.git', { authHeaderSecret: 'h', keepGitDir: true }), {
      identifier: 'git://127.0.0.1:8080/r.git',
      attrs: { 'git.fullurl': 'http://127.0.0.1:8080/r.git', 'git.keepgitdir': 'true', 'git.authheadersecret': 'h' },
    });
  });
});
