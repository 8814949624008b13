/**
 * Seccomp profiles: conversion to the OCI spec for a container's
 * capabilities and host (a small synthetic profile, then the system's
 * containers-common one), parsing errors, and the per-process loading.
 */
import assert from 'node:assert/strict';
import { access, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { ALL_CAPABILITIES, DEFAULT_CAPABILITIES } from '../../../src/executor/oci-spec.js';
import { SECCOMP_PROFILE, sandboxSeccomp } from '../../../src/executor/process-facts.js';
import { kernelLacksArches, ociSeccomp, parseSeccompProfile, type OciSeccomp, type SeccompProfile } from '../../../src/executor/seccomp.js';

const PROFILE = JSON.stringify({
  defaultAction: 'SCMP_ACT_ERRNO',
  defaultErrnoRet: 38,
  archMap: [
    { architecture: 'SCMP_ARCH_X86_64', subArchitectures: ['SCMP_ARCH_X86', 'SCMP_ARCH_X32'] },
    { architecture: 'SCMP_ARCH_AARCH64', subArchitectures: ['SCMP_ARCH_ARM'] },
  ],
  syscalls: [
    { names: ['read', 'write'], action: 'SCMP_ACT_ALLOW', args: [], comment: '', includes: {}, excludes: {} },
    { names: ['personality'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: 8, valueTwo: 0, op: 'SCMP_CMP_EQ' }], includes: {}, excludes: {} },
    { names: ['kexec_load'], action: 'SCMP_ACT_ERRNO', args: null, errnoRet: 1, errno: 'EPERM' },
    { names: ['arch_prctl'], action: 'SCMP_ACT_ALLOW', args: [], includes: { arches: ['amd64', 'x32'] }, excludes: {} },
    { names: ['setns'], action: 'SCMP_ACT_ALLOW', args: [], includes: { caps: ['CAP_SYS_ADMIN'] }, excludes: {} },
    { names: ['setns'], action: 'SCMP_ACT_ERRNO', args: [], includes: {}, excludes: { caps: ['CAP_SYS_ADMIN'] }, errnoRet: 1 },
    { names: ['both'], action: 'SCMP_ACT_ALLOW', args: [], includes: { caps: ['CAP_CHOWN', 'CAP_SYS_ADMIN'] }, excludes: {} },
    { names: ['new_call'], action: 'SCMP_ACT_ALLOW', args: [], includes: { minKernel: '5.10' }, excludes: {} },
    { names: ['not_on_arm'], action: 'SCMP_ACT_ALLOW', args: [], includes: {}, excludes: { arches: ['arm64'] } },
    { name: 'old_style', action: 'SCMP_ACT_ALLOW' },
  ],
});

const convert = (target: { capabilities?: readonly string[]; arch?: string; kernel?: string; kernelLacks?: readonly string[] }, profile: SeccompProfile = parseSeccompProfile(PROFILE, 'test.json')) =>
  ociSeccomp(profile, {
    capabilities: target.capabilities ?? DEFAULT_CAPABILITIES,
    arch: target.arch ?? 'x64',
    kernel: target.kernel ?? '6.1.0-13-amd64',
    ...(target.kernelLacks === undefined ? {} : { kernelLacks: target.kernelLacks }),
  });

/** The running kernel's /proc/config.gz, unzipped, if it has one. */
const runningKernelConfig = (): Promise<string | undefined> => readFile('/proc/config.gz').then((gz) => gunzipSync(gz).toString('utf8'), () => undefined);

/** The names of the rules of `filter` with action `action` and no argument conditions. */
const named = (filter: OciSeccomp, action: string): string[] => filter.syscalls.filter((r) => r.action === action && r.args === undefined).flatMap((r) => r.names);

describe('ociSeccomp', () => {
  test('a sandboxed container on amd64: the rules for its capabilities and arch, in order, in OCI form', () => {
    assert.deepEqual(convert({}), {
      defaultAction: 'SCMP_ACT_ERRNO',
      defaultErrnoRet: 38,
      architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
      syscalls: [
        { names: ['read', 'write'], action: 'SCMP_ACT_ALLOW' },
        { names: ['personality'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: 8, valueTwo: 0, op: 'SCMP_CMP_EQ' }] },
        { names: ['kexec_load'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 },
        { names: ['arch_prctl'], action: 'SCMP_ACT_ALLOW' },
        { names: ['setns'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 },
        { names: ['new_call'], action: 'SCMP_ACT_ALLOW' },
        { names: ['not_on_arm'], action: 'SCMP_ACT_ALLOW' },
        { names: ['old_style'], action: 'SCMP_ACT_ALLOW' },
      ],
    });
  });

  test('includes need every capability listed; excludes drop a rule for any one held', () => {
    const admin = convert({ capabilities: ['CAP_SYS_ADMIN'] });
    assert.deepEqual(named(admin, 'SCMP_ACT_ALLOW').filter((n) => n === 'setns' || n === 'both'), ['setns']);
    assert.equal(named(admin, 'SCMP_ACT_ERRNO').includes('setns'), false);
    const both = convert({ capabilities: ['CAP_CHOWN', 'CAP_SYS_ADMIN'] });
    assert.ok(named(both, 'SCMP_ACT_ALLOW').includes('both'));
  });

  test('arch and kernel conditions; the archMap entry of the host', () => {
    const arm = convert({ arch: 'arm64' });
    assert.deepEqual(arm.architectures, ['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM']);
    assert.equal(named(arm, 'SCMP_ACT_ALLOW').includes('arch_prctl'), false);
    assert.equal(named(arm, 'SCMP_ACT_ALLOW').includes('not_on_arm'), false);
    assert.equal(named(convert({ kernel: '5.4.0' }), 'SCMP_ACT_ALLOW').includes('new_call'), false);
    assert.ok(named(convert({ kernel: '5.10' }), 'SCMP_ACT_ALLOW').includes('new_call'));
    // An arch the map does not list: the profile's plain `architectures`, here none (the runtime's native one).
    assert.deepEqual(convert({ arch: 'loong64' }).architectures, []);
  });

  test('sub-architectures the kernel was built without are left out; the native one and the rules stay', () => {
    const full = convert({});
    const lean = convert({ kernelLacks: ['SCMP_ARCH_X32', 'SCMP_ARCH_X86_64'] });
    assert.deepEqual(lean.architectures, ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86']);
    assert.deepEqual(lean.syscalls, full.syscalls);
    assert.deepEqual(convert({ arch: 'arm64', kernelLacks: ['SCMP_ARCH_ARM'] }).architectures, ['SCMP_ARCH_AARCH64']);
  });

  test('kernelLacksArches: the sub-architectures whose kernel option is not built in', () => {
    const config = ['CONFIG_IA32_EMULATION=y', '# CONFIG_X86_X32_ABI is not set', 'CONFIG_COMPAT=y', 'CONFIG_SECCOMP=y'].join('\n');
    assert.deepEqual(kernelLacksArches(config), ['SCMP_ARCH_X32']);
    assert.deepEqual(kernelLacksArches('CONFIG_X86_X32_ABI=y\n'), ['SCMP_ARCH_X86', 'SCMP_ARCH_ARM', 'SCMP_ARCH_S390']);
    // No config to read: nothing is known, so nothing is left out.
    assert.deepEqual(kernelLacksArches(undefined), []);
  });

  test('parse errors name the file and the field', () => {
    assert.throws(() => parseSeccompProfile('{', 'p.json'), { code: 'E_EXECUTOR', message: /^seccomp profile p\.json is not JSON \(.*\); fix or remove the file$/ });
    assert.throws(() => parseSeccompProfile('{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":"read","action":"SCMP_ACT_ALLOW"}]}', 'p.json'), {
      code: 'E_EXECUTOR',
      message: 'seccomp profile p.json: syscalls[0].names must be an array of strings; fix or remove the file',
    });
    assert.throws(() => parseSeccompProfile('{"syscalls":[]}', 'p.json'), { message: 'seccomp profile p.json: defaultAction must be a string; fix or remove the file' });
  });
});

describe(`the system profile (${SECCOMP_PROFILE})`, async () => {
  const present = await access(SECCOMP_PROFILE).then(() => true, () => false);
  const options = { skip: present ? false : `${SECCOMP_PROFILE} is not installed (apt-get install golang-github-containers-common)` };

  test('sandboxed on amd64: unknown syscalls fail with ENOSYS; admin, module and clock calls are refused', options, async () => {
    const { filter, status } = await sandboxSeccomp();
    assert.deepEqual(status, { enabled: true, profile: SECCOMP_PROFILE });
    assert.ok(filter !== undefined);
    assert.equal(filter.defaultAction, 'SCMP_ACT_ERRNO');
    assert.equal(filter.defaultErrnoRet, 38);
    const allowed = named(filter, 'SCMP_ACT_ALLOW');
    const refused = named(filter, 'SCMP_ACT_ERRNO');
    for (const call of ['read', 'execve', 'clone', 'chroot']) assert.ok(allowed.includes(call), `${call} allowed`);
    // Without CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_SYS_TIME, CAP_DAC_READ_SEARCH: refused. (Unlike
    // Docker's profile, this one allows mount, unshare and setns to all: capabilities guard them.)
    for (const call of ['sethostname', 'bpf', 'perf_event_open', 'init_module', 'clock_settime', 'kexec_load', 'open_by_handle_at']) {
      assert.ok(refused.includes(call) && !allowed.includes(call), `${call} refused`);
    }
    // The same profile for a container holding every capability allows them.
    const privileged = ociSeccomp(parseSeccompProfile(await readFile(SECCOMP_PROFILE, 'utf8'), SECCOMP_PROFILE), {
      capabilities: ALL_CAPABILITIES,
      arch: process.arch,
      kernel: os.release(),
    });
    for (const call of ['sethostname', 'bpf', 'init_module', 'clock_settime']) assert.ok(named(privileged, 'SCMP_ACT_ALLOW').includes(call), `${call} allowed with every capability`);
    if (process.arch === 'x64') {
      // The sub-architectures this kernel can run (x32 is seldom built in).
      const lacks = kernelLacksArches(await runningKernelConfig());
      assert.deepEqual(filter.architectures, ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'].filter((a) => !lacks.includes(a)));
      assert.ok(allowed.includes('arch_prctl'));
    }
  });
});

describe('sandboxSeccomp', () => {
  let tmp: string;
  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'kiln-seccomp-'));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  test('reads a profile once per process; a missing one means no filter, saying why; a broken one fails', async () => {
    const file = path.join(tmp, 'profile.json');
    await writeFile(file, PROFILE);
    const first = await sandboxSeccomp(file);
    assert.deepEqual(first.filter, convert({ arch: process.arch, kernel: os.release(), kernelLacks: kernelLacksArches(await runningKernelConfig()) }));
    await writeFile(file, '{');
    assert.equal(await sandboxSeccomp(file), first, 'cached');
    const missing = path.join(tmp, 'missing.json');
    assert.deepEqual(await sandboxSeccomp(missing), { filter: undefined, status: { enabled: false, reason: `no profile at ${missing}` } });
    const broken = path.join(tmp, 'broken.json');
    await writeFile(broken, '[]');
    await assert.rejects(sandboxSeccomp(broken), { code: 'E_EXECUTOR', message: `seccomp profile ${broken}: the profile must be an object; fix or remove the file` });
  });
});
