/**
 * pb.Definition fixtures shaped as BuildKit v0.24's `dockerfile2llb` writes
 * them (its Go `llb` client's marshalling, read from BuildKit's source: every
 * op carries a Platform where the op is platform-specific and an empty
 * WorkerConstraints, file ops have none, copies have mode -1 and timestamp
 * -1 unless set, names are looked up in the chain's base input, secret and
 * ssh mounts keep output 0, the result pointer's metadata lists
 * `constraints` and `platform` caps). They are built here as protobuf
 * messages, encoded with kiln's deterministic encoder, and committed under
 * test/fixtures/pb/ (regenerate with `KILN_WRITE_PB_FIXTURES=1` and
 * test/unit/llb/pb-fixtures.test.ts). BuildKit's digests are sha256 of these
 * op bytes, so each fixture also pins kiln's encoder.
 */
import { sha256 } from '../../src/digest.js';
import { encodeDefinition } from '../../src/llb/pb-convert.js';
import type { PbObject } from '../../src/llb/pb-schema.js';
import { encodePb } from '../../src/llb/pb-wire.js';

const PLATFORM = { Architecture: 'amd64', OS: 'linux' };
const EMPTY_CONSTRAINTS = {};
const ENV = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'];

/** A Definition under construction: ops appended in marshal order, each with its metadata. */
class Fixture {
  readonly #entries: { bytes: Uint8Array; digest: ReturnType<typeof sha256>; metadata: PbObject | undefined }[] = [];

  add(op: PbObject, metadata?: PbObject): { digest: string } {
    const bytes = encodePb('Op', op);
    const digest = sha256(bytes);
    if (!this.#entries.some((e) => e.digest === digest)) this.#entries.push({ bytes, digest, metadata });
    return { digest };
  }

  /** The result pointer, with the caps BuildKit's client gives it, then the encoded Definition. */
  finish(result: { digest: string }, index = 0): Uint8Array {
    const caps: Record<string, boolean> = { constraints: true, platform: true };
    if (this.#entries.some((e) => e.metadata?.['description'] !== undefined)) caps['meta.description'] = true;
    const bytes = encodePb('Op', { inputs: [{ digest: result.digest, index }] });
    return encodeDefinition([...this.#entries, { bytes, digest: sha256(bytes), metadata: { caps } }]);
  }
}

function named(name: string, command: string | undefined, caps: readonly string[]): PbObject {
  return {
    description: { 'llb.customname': name, ...(command === undefined ? {} : { 'com.docker.dockerfile.v1.command': command }) },
    caps: Object.fromEntries(caps.map((c) => [c, true])),
  };
}

/** `local://context` as the Dockerfile frontend loads the build context. */
function context(f: Fixture): { digest: string } {
  return f.add(
    {
      source: {
        identifier: 'local://context',
        attrs: { 'local.session': 'k1n5e55i0n', 'local.sharedkeyhint': 'context', 'local.excludepatterns': '["*.tmp"]' },
      },
      constraints: EMPTY_CONSTRAINTS,
    },
    named('[internal] load build context', undefined, ['source.local', 'source.local.sessionid', 'source.local.sharedkeyhint', 'source.local.excludepatterns']),
  );
}

function copyAction(src: string, dest: string, extra: PbObject = {}): PbObject {
  return {
    src,
    dest,
    mode: -1,
    followSymlink: true,
    dirCopyContents: true,
    createDestPath: true,
    allowWildcard: true,
    allowEmptyWildcard: true,
    timestamp: -1,
    ...extra,
  };
}

function exec(args: readonly string[], mounts: readonly PbObject[], extra: { meta?: PbObject; exec?: PbObject } = {}): PbObject {
  return {
    meta: { args, env: ENV, cwd: '/', removeMountStubsRecursive: true, ...extra.meta },
    mounts,
    ...extra.exec,
  };
}

const ROOT = (input: number): PbObject => ({ input, dest: '/', output: 0 });

/**
 * `FROM scratch` / `COPY --chown=1000:1000 --chmod=0640 dir/ /dst/dir/` /
 * `COPY *.txt /texts/` / `COPY --exclude=skip*.txt --exclude=dir . /all/` / `COPY --link a.txt /linked/`
 * (a copy onto scratch merged over the stage).
 */
export function copyFixture(): Uint8Array {
  const f = new Fixture();
  const ctx = context(f);
  const chown = f.add(
    {
      inputs: [{ digest: ctx.digest }],
      file: {
        actions: [
          {
            input: -1,
            secondaryInput: 0,
            output: 0,
            copy: copyAction('/dir/', '/dst/dir/', { owner: { user: { byID: 1000 }, group: { byID: 1000 } }, mode: 0o640 }),
          },
        ],
      },
      constraints: EMPTY_CONSTRAINTS,
    },
    named('[2/5] COPY --chown=1000:1000 --chmod=0640 dir/ /dst/dir/', 'COPY --chown=1000:1000 --chmod=0640 dir/ /dst/dir/', ['file.base']),
  );
  const wild = f.add(
    {
      inputs: [{ digest: chown.digest }, { digest: ctx.digest }],
      file: { actions: [{ input: 0, secondaryInput: 1, output: 0, copy: copyAction('/*.txt', '/texts/') }] },
      constraints: EMPTY_CONSTRAINTS,
    },
    named('[3/5] COPY *.txt /texts/', 'COPY *.txt /texts/', ['file.base']),
  );
  const filtered = f.add(
    {
      inputs: [{ digest: wild.digest }, { digest: ctx.digest }],
      file: { actions: [{ input: 0, secondaryInput: 1, output: 0, copy: copyAction('/', '/all/', { exclude_patterns: ['skip*.txt', 'dir'] }) }] },
      constraints: EMPTY_CONSTRAINTS,
    },
    named('[4/5] COPY --exclude=skip*.txt --exclude=dir . /all/', 'COPY --exclude=skip*.txt --exclude=dir . /all/', ['file.base', 'file.copy.includeexcludepatterns']),
  );
  const linked = f.add(
    {
      inputs: [{ digest: ctx.digest }],
      file: { actions: [{ input: -1, secondaryInput: 0, output: 0, copy: copyAction('/a.txt', '/linked/', { mode: 0o755 }) }] },
      constraints: EMPTY_CONSTRAINTS,
    },
    named('[5/5] COPY --link --chmod=755 a.txt /linked/', 'COPY --link --chmod=755 a.txt /linked/', ['file.base']),
  );
  const merged = f.add(
    { inputs: [{ digest: filtered.digest }, { digest: linked.digest }], merge: { inputs: [{ input: 0 }, { input: 1 }] }, constraints: EMPTY_CONSTRAINTS },
    named('[5/5] COPY --link --chmod=755 a.txt /linked/', undefined, ['mergeop']),
  );
  return f.finish(merged);
}

/**
 * `FROM busybox AS build` / `WORKDIR /src` / `RUN --mount=type=cache,target=/cache
 * --mount=type=tmpfs,target=/tmp --mount=type=secret,id=token ...` /
 * `FROM busybox` / `USER app` / `COPY --from=build --chown=app:app /src/out /out`
 * / `RUN ...` with a proxy and an exit code list.
 */
export function imageFixture(image = 'docker-image://docker.io/library/busybox:latest'): Uint8Array {
  const f = new Fixture();
  const base = f.add(
    { source: { identifier: image }, platform: PLATFORM, constraints: EMPTY_CONSTRAINTS },
    named(`[build 1/3] FROM ${image.slice('docker-image://'.length)}`, undefined, ['source.image']),
  );
  const workdir = f.add(
    {
      inputs: [{ digest: base.digest }],
      file: { actions: [{ input: 0, secondaryInput: -1, output: 0, mkdir: { path: '/src', mode: 0o755, makeParents: true, timestamp: -1 } }] },
      constraints: EMPTY_CONSTRAINTS,
    },
    named('[build 2/3] WORKDIR /src', 'WORKDIR /src', ['file.base']),
  );
  const run = f.add(
    {
      inputs: [{ digest: workdir.digest }],
      exec: exec(
        ['/bin/sh', '-c', 'mkdir -p out && cat /run/secrets/token > /dev/null; echo built > out/result; touch /cache/seen'],
        [
          ROOT(0),
          { input: -1, dest: '/cache', output: -1, mountType: 3, cacheOpt: { ID: '/cache', sharing: 0 } },
          { input: -1, dest: '/tmp', output: -1, mountType: 4, TmpfsOpt: {} },
          { input: -1, dest: '/run/secrets/token', mountType: 1, secretOpt: { ID: 'token', mode: 0o400 } },
        ],
        { meta: { cwd: '/src' } },
      ),
      platform: PLATFORM,
      constraints: EMPTY_CONSTRAINTS,
    },
    named('[build 3/3] RUN --mount=type=cache,target=/cache ... make', 'RUN --mount=type=cache,target=/cache --mount=type=tmpfs,target=/tmp --mount=type=secret,id=token make', [
      'exec.meta.base',
      'exec.mount.bind',
      'exec.mount.cache',
      'exec.mount.cache.sharing',
      'exec.mount.tmpfs',
      'exec.mount.secret',
      'exec.meta.removemountstubs.recursive',
    ]),
  );
  const copy = f.add(
    {
      inputs: [{ digest: base.digest }, { digest: run.digest }],
      file: {
        actions: [
          {
            input: 0,
            secondaryInput: 1,
            output: 0,
            copy: copyAction('/src/out', '/out', { owner: { user: { byName: { name: 'nobody', input: 0 } }, group: { byName: { name: 'nogroup', input: 0 } } } }),
          },
        ],
      },
      constraints: EMPTY_CONSTRAINTS,
    },
    named('[stage-1 2/3] COPY --from=build --chown=nobody:nogroup /src/out /out', 'COPY --from=build --chown=nobody:nogroup /src/out /out', ['file.base']),
  );
  const last = f.add(
    {
      inputs: [{ digest: copy.digest }],
      exec: exec(['/bin/sh', '-c', 'id -u > /out/uid; echo "$HTTP_PROXY" > /out/proxy'], [ROOT(0)], {
        meta: { user: 'nobody', proxy_env: { http_proxy: 'http://127.0.0.1:3128' }, validExitCodes: [0, 1] },
      }),
      platform: PLATFORM,
      constraints: EMPTY_CONSTRAINTS,
    },
    named('[stage-1 3/3] RUN id -u > /out/uid', 'RUN id -u > /out/uid', ['exec.meta.base', 'exec.mount.bind', 'exec.meta.proxyenv', 'exec.validexitcode']),
  );
  return f.finish(last);
}

/** A source that needs a cap kiln lacks (`RUN --device`'s CDI). */
export function unsupportedCapFixture(): Uint8Array {
  const f = new Fixture();
  const ctx = f.add({ source: { identifier: 'local://context' }, constraints: EMPTY_CONSTRAINTS }, named('ctx', undefined, ['source.local', 'exec.meta.cdi']));
  return f.finish(ctx);
}

/** A Definition holding a BuildOp. */
export function buildOpFixture(): Uint8Array {
  const f = new Fixture();
  const ctx = f.add({ source: { identifier: 'local://context' }, constraints: EMPTY_CONSTRAINTS });
  const build = f.add({ inputs: [{ digest: ctx.digest }], build: { builder: -1, attrs: { 'llbbuild.filename': 'def.pb' } } }, named('nested', undefined, []));
  return f.finish(build);
}

/** The committed fixtures, by file name under test/fixtures/pb/. */
export const PB_FIXTURES: Readonly<Record<string, () => Uint8Array>> = {
  'copy.pb': copyFixture,
  'image.pb': () => imageFixture(),
};
