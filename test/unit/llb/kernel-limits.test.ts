/**
 * Values that the loader used to accept and the kernel or runc then refused
 * mid-build (a uid past 32 bits surfaced as runc's Go unmarshal error): each
 * is now rejected at load time, at its JSON path.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadDefinition } from '../../../src/llb/load.js';
import { assertProblem, execOp, fileOp, withOp } from './problems.js';

const META = 'ops.x.exec.meta';
const secret = (fields: Record<string, unknown>): unknown =>
  withOp(execOp({ mounts: [{ dest: '/', input: 0, output: 0 }, { dest: '/s', type: 'secret', secret: { id: 's', ...fields } }] }));

describe('user and group ids', () => {
  it('accepts 0..4294967294 and rejects 4294967295 and beyond on secret and ssh mounts', () => {
    assert.ok(loadDefinition(secret({ uid: 4294967294, gid: 0 })));
    assertProblem(secret({ uid: 4294967295 }), 'ops.x.exec.mounts[1].secret.uid', 'user and group ids are 0..4294967294');
    assertProblem(secret({ gid: 2 ** 40 }), 'ops.x.exec.mounts[1].secret.gid', 'user and group ids are 0..4294967294');
  });

  it('checks numeric file owners', () => {
    assertProblem(withOp(fileOp({ input: 0, output: 0, mkdir: { path: '/a', owner: { user: 4294967296 } } })), 'ops.x.file.actions[0].mkdir.owner.user', 'user and group ids');
    assertProblem(withOp(fileOp({ input: 0, output: 0, mkdir: { path: '/a', owner: { group: -1 } } })), 'ops.x.file.actions[0].mkdir.owner.group', 'user and group ids');
  });

  it('checks the numeric parts of meta.user, leaving names to the rootfs', () => {
    for (const user of ['', '0', '1000:1000', 'nobody', 'app:4294967294', '4294967294']) assert.ok(loadDefinition(withOp(execOp({}, { user }))));
    assertProblem(withOp(execOp({}, { user: '99999999999' })), `${META}.user`, '"99999999999" is out of range');
    assertProblem(withOp(execOp({}, { user: '0:4294967295' })), `${META}.user`, '"4294967295" is out of range');
  });

  it('checks http.uid and http.gid', () => {
    const http = (attrs: Record<string, string>): unknown => ({ version: 1, ops: { h: { source: { identifier: 'https://example.com/f', attrs } } }, result: 'h' });
    assert.ok(loadDefinition(http({ 'http.uid': '4294967294' })));
    assertProblem(http({ 'http.gid': '4294967295' }), 'ops.h.source.attrs["http.gid"]', 'is out of range');
    assertProblem(http({ 'http.uid': '1'.repeat(400) }), 'ops.h.source.attrs["http.uid"]', 'is out of range');
  });
});

describe('hostnames', () => {
  it('accepts RFC 1123 names up to 64 characters', () => {
    for (const hostname of ['', 'box', 'build-1', 'a.b.example', 'x'.repeat(63)]) assert.ok(loadDefinition(withOp(execOp({}, { hostname }))));
  });

  it('rejects longer names and other characters', () => {
    assertProblem(withOp(execOp({}, { hostname: `${'a'.repeat(40)}.${'b'.repeat(30)}` })), `${META}.hostname`, 'a hostname is at most 64');
    for (const hostname of ['-x', 'x-', 'a b', 'a_b', 'a..b', 'é', 'x\n127.0.0.1 evil']) {
      assertProblem(withOp(execOp({}, { hostname })), `${META}.hostname`, 'is not a hostname');
    }
  });

  it('rejects an extraHosts name that would add lines to /etc/hosts', () => {
    assertProblem(withOp(execOp({}, { extraHosts: [{ host: 'db\n1.2.3.4 evil', ip: '10.0.0.2' }] })), `${META}.extraHosts[0].host`, 'is not an /etc/hosts name');
  });
});

describe('NUL characters', () => {
  it('are refused in arguments, variables, paths and cwd, at their path', () => {
    assertProblem(withOp(execOp({}, { args: ['/bin/sh', '-c', 'echo a\u0000b'] })), `${META}.args[2]`, 'holds a NUL character (at index 6)');
    assertProblem(withOp(execOp({}, { env: ['A=b\u0000c'] })), `${META}.env[0]`, 'holds a NUL character');
    assertProblem(withOp(execOp({}, { cwd: '/w\u0000x' })), `${META}.cwd`, 'holds a NUL character');
    assertProblem(withOp(fileOp({ input: 0, output: 0, mkdir: { path: '/a\u0000b' } })), 'ops.x.file.actions[0].mkdir.path', 'holds a NUL character');
  });

  it('are kept in the contents of a file', () => {
    const def = loadDefinition(withOp(fileOp({ input: 0, output: 0, mkfile: { path: '/bin.dat', data: 'a\u0000b' } })));
    assert.ok(def);
  });
});
