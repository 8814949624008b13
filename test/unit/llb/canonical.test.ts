import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CacheKey } from '../../../src/digest.js';
import { canonicalJson, digestOf, sha256 } from '../../../src/digest.js';
import { canonicalOp, opCacheKey } from '../../../src/llb/canonical.js';
import { hostPlatform, loadDefinition } from '../../../src/llb/load.js';
import type { Op } from '../../../src/llb/types.js';

const IMG = { source: { identifier: 'docker-image://alpine:3.20' } };
const MKFILE = { input: 0, mkfile: { path: '/f', data: 'x', timestamp: '1' } };
const COPY = { input: 1, secondaryInput: 0, output: 0, copy: { src: '/etc', dest: '/e', mode: 'u+x' } };
const META = { args: ['make'] };
const ROOT = { dest: '/', input: 0, output: 0 };

/** The pieces of the test graph a case may replace. */
interface Parts {
  readonly img?: object;
  readonly mkfile?: object;
  readonly copy?: object;
  readonly meta?: object;
  readonly exec?: object;
  readonly mounts?: readonly object[];
  readonly runInputs?: readonly unknown[];
  readonly metadata?: object;
}

/** img → files → run, written with nothing but required fields unless `parts` says otherwise. */
function graph(parts: Parts = {}, names = { img: 'img', files: 'files', run: 'run' }): unknown {
  const extra = parts.metadata === undefined ? {} : { metadata: parts.metadata };
  return {
    version: 1,
    ops: {
      [names.img]: { ...(parts.img ?? IMG), ...extra },
      [names.files]: { inputs: [names.img], file: { actions: [parts.mkfile ?? MKFILE, parts.copy ?? COPY] }, ...extra },
      [names.run]: {
        inputs: parts.runInputs ?? [names.files],
        exec: { meta: parts.meta ?? META, mounts: parts.mounts ?? [ROOT], ...parts.exec },
        ...extra,
      },
    },
    result: names.run,
  };
}

/** The ops' digests in dependency order (img, files, run), whatever they are named. */
function digests(json: unknown): string[] {
  return [...loadDefinition(json).ops.values()].map((op) => op.digest);
}

function opOf(json: unknown, name: string): Op {
  const found = loadDefinition(json).ops.get(name);
  assert.ok(found !== undefined, name);
  return found;
}

function reverseKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(reverseKeys);
  if (typeof value !== 'object' || value === null) return value;
  return Object.fromEntries(
    Object.entries(value)
      .reverse()
      .map(([k, v]) => [k, reverseKeys(v)]),
  );
}

describe('op digests and cache keys', () => {
  it('do not change when ops are renamed', () => {
    assert.deepEqual(digests(graph({}, { img: 'alpine', files: 'prepare', run: 'compile' })), digests(graph()));
  });

  it('do not change when JSON keys are written in another order', () => {
    assert.deepEqual(digests(reverseKeys(graph())), digests(graph()));
  });

  it('do not change when defaults are written out', () => {
    const explicit = graph({
      img: { source: { ...IMG.source, attrs: {} }, platform: { ...hostPlatform() }, constraints: [], inputs: [] },
      mkfile: { ...MKFILE, secondaryInput: -1, output: -1, mkfile: { ...MKFILE.mkfile, mode: '0644', timestamp: 1 } },
      copy: { ...COPY, copy: { ...COPY.copy, followSymlink: false, includePatterns: [], alwaysReplaceExistingDestPaths: false } },
      meta: { ...META, env: [], cwd: '/', user: '', hostname: '', validExitCodes: [0], ulimit: [] },
      exec: { network: 'sandbox', security: 'sandbox', secretEnv: [] },
      mounts: [{ ...ROOT, type: 'bind', selector: '', readonly: false }],
      runInputs: [{ op: 'files', output: 0 }],
    });
    assert.deepEqual(digests(explicit), digests(graph()));
  });

  it('do not change with metadata', () => {
    const metadata = { description: { 'llb.customname': 'step' }, ignoreCache: true, progressGroup: { id: 'g', name: 'G' } };
    assert.deepEqual(digests(graph({ metadata })), digests(graph()));
  });

  it('change when anything that shapes the result changes, and so do the digests of the ops that use it', () => {
    const edits: Record<string, Parts> = {
      identifier: { img: { source: { identifier: 'docker-image://alpine:3.21' } } },
      attrs: { img: { source: { ...IMG.source, attrs: { 'image.resolvemode': 'pull' } } } },
      platform: { img: { ...IMG, platform: { os: 'linux', architecture: 'ppc64le' } } },
      constraints: { img: { ...IMG, constraints: ['executor==runc'] } },
      data: { mkfile: { ...MKFILE, mkfile: { ...MKFILE.mkfile, data: 'y' } } },
      mode: { mkfile: { ...MKFILE, mkfile: { ...MKFILE.mkfile, mode: '0600' } } },
      timestamp: { mkfile: { ...MKFILE, mkfile: { ...MKFILE.mkfile, timestamp: '2' } } },
      copyMode: { copy: { ...COPY, copy: { ...COPY.copy, mode: 'u+w' } } },
      copyModeBits: { copy: { ...COPY, copy: { ...COPY.copy, mode: '0755' } } },
      owner: { copy: { ...COPY, copy: { ...COPY.copy, owner: { user: 1 } } } },
      secondaryInput: { copy: { ...COPY, secondaryInput: -1 } },
      args: { meta: { args: ['make', 'all'] } },
      env: { meta: { ...META, env: ['A=1'] } },
      cwd: { meta: { ...META, cwd: '/src' } },
      network: { exec: { network: 'none' } },
      cacheMount: { mounts: [ROOT, { type: 'cache', dest: '/c' }] },
      readonlyMount: { mounts: [ROOT, { dest: '/ro', input: 0, readonly: true }] },
    };
    const original = digests(graph());
    const seen = new Map<string, string>([[original.join(), 'the original']]);
    for (const [what, parts] of Object.entries(edits)) {
      const changed = digests(graph(parts));
      assert.notEqual(changed[2], original[2], `${what} changed the digest of run`);
      assert.ok(!seen.has(changed.join()), `${what} gave the same digests as ${seen.get(changed.join()) ?? ''}`);
      seen.set(changed.join(), what);
    }
  });

  it('are the digest of the canonical form over the inputs own digests', () => {
    const img = opOf(graph(), 'img');
    const files = opOf(graph(), 'files');
    assert.equal(files.digest, digestOf(canonicalOp(files, [img.digest])));
    assert.equal(files.digest, opCacheKey(files, [img.digest as string as CacheKey]));
  });

  it('depend on the input keys given', () => {
    const files = opOf(graph(), 'files');
    const a = opCacheKey(files, ['sha256:a' as CacheKey]);
    assert.notEqual(a, opCacheKey(files, ['sha256:b' as CacheKey]));
    assert.equal(a, opCacheKey(files, ['sha256:a' as CacheKey]));
    assert.throws(() => opCacheKey(files, []), /1 inputs but 0 input ids/);
  });
});

describe('canonicalOp', () => {
  it('writes every exec mount as one record for all kinds, as format v1 first keyed it (keys do not change)', () => {
    const mounts = [
      ROOT,
      { type: 'cache', dest: '/c', input: 0, cache: { id: 'go', sharing: 'locked' } },
      { type: 'tmpfs', dest: '/t', tmpfs: { size: 1024 } },
      { type: 'secret', dest: '/s', secret: { id: 'k', uid: 1, gid: 2, mode: '0440', optional: true } },
      { type: 'ssh', dest: '/ssh' },
    ];
    const canonical = canonicalOp(opOf(graph({ mounts }), 'run'), ['ID']) as { exec: { mounts: unknown } };
    assert.deepEqual(canonical.exec.mounts, [
      { type: 'bind', dest: '/', input: 0, selector: '', output: 0, readonly: false },
      { type: 'cache', dest: '/c', input: 0, selector: '', output: -1, readonly: false, cache: { id: 'go', sharing: 'locked' } },
      { type: 'tmpfs', dest: '/t', input: -1, selector: '', output: -1, readonly: false, tmpfs: { size: 1024 } },
      { type: 'secret', dest: '/s', input: -1, selector: '', output: -1, readonly: true, secret: { id: 'k', uid: 1, gid: 2, mode: 0o440, optional: true } },
      { type: 'ssh', dest: '/ssh', input: -1, selector: '', output: -1, readonly: true, ssh: { id: 'default', uid: 0, gid: 0, mode: 0o600, optional: false } },
    ]);
  });

  it('replaces inputs by ids, leaves out name and metadata, and encodes bytes (as their digest), bigints and copy modes', () => {
    const files = opOf(graph(), 'files');
    const annotated: Op = { ...files, name: 'renamed', metadata: { description: { x: 'y' }, ignoreCache: true } };
    const canonical = canonicalOp(annotated, ['ID']);
    assert.deepEqual(JSON.parse(JSON.stringify(canonical)), {
      inputs: [{ id: 'ID', output: 0 }],
      platform: hostPlatform(),
      constraints: [],
      file: {
        actions: [
          { input: 0, secondaryInput: -1, output: -1, mkfile: { path: '/f', mode: 0o644, data: sha256('x'), timestamp: '1' } },
          {
            input: 1,
            secondaryInput: 0,
            output: 0,
            copy: {
              src: '/etc',
              dest: '/e',
              mode: 'u+x',
              followSymlink: false,
              dirCopyContents: false,
              createDestPath: false,
              allowWildcard: false,
              allowEmptyWildcard: false,
              includePatterns: [],
              excludePatterns: [],
              alwaysReplaceExistingDestPaths: false,
            },
          },
        ],
      },
    });
  });

  it('writes bit modes as numbers', () => {
    const files = opOf(graph({ copy: { ...COPY, copy: { ...COPY.copy, mode: '0755' } } }), 'files');
    assert.match(canonicalJson(canonicalOp(files, ['ID'])), /"dest":"\/e",[^}]*"mode":493,/);
  });
});
