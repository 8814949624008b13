#!/usr/bin/env bash
# Fails when a tracked file still holds a merge conflict marker: one slipped
# into bench/README.md once, and neither tsc nor eslint reads markdown.
cd "$(dirname "$0")/.." || exit 1
git rev-parse --git-dir >/dev/null 2>&1 || exit 0  # not a clone: nothing to check
if git grep -nE '^(<<<<<<<|>>>>>>>) ' -- . ':!node_modules'; then
  echo "merge conflict markers left in the files above" >&2
  exit 1
fi
