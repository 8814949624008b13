import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pickRef } from '../../../src/source/git/remote-cache.js';

const LS_REMOTE = [
  'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\tHEAD',
  'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\trefs/heads/v1',
  'cccccccccccccccccccccccccccccccccccccccc\trefs/tags/v1',
  'dddddddddddddddddddddddddddddddddddddddd\trefs/tags/v1^{}',
  'eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee\trefs/heads/main',
  'ffffffffffffffffffffffffffffffffffffffff\trefs/remotes/origin/main',
].join('\n');

describe('pickRef', () => {
  it('prefers a tag over a branch of the same name, as git rev-parse does, and peels annotated tags', () => {
    assert.deepEqual(pickRef(LS_REMOTE, 'v1'), { commit: 'dddddddddddddddddddddddddddddddddddddddd', refName: 'refs/tags/v1' });
  });
  it('finds branches, full ref names and HEAD', () => {
    assert.deepEqual(pickRef(LS_REMOTE, 'main'), { commit: 'eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee', refName: 'refs/heads/main' });
    assert.deepEqual(pickRef(LS_REMOTE, 'refs/heads/v1'), { commit: 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', refName: 'refs/heads/v1' });
    assert.deepEqual(pickRef(LS_REMOTE, 'HEAD'), { commit: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', refName: 'HEAD' });
  });
  it('does not take a suffix match for the ref', () => {
    assert.equal(pickRef(LS_REMOTE, 'ain'), undefined);
    assert.equal(pickRef('', 'main'), undefined);
  });
});
