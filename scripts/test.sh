#!/usr/bin/env bash
# The whole test suite: unit tests, then end-to-end tests of the CLI.
# Installs what it needs first (scripts/setup.sh). Needs root (real mounts).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Type-aware lint and the folder layering (eslint.config.js, .dependency-cruiser.cjs).
npm run --silent lint
# Unit tests run two files at a time; end-to-end tests one at a time, since
# several of them kill or race kiln processes on purpose.
node --test --test-concurrency=2 dist/test/unit/
node --test --test-concurrency=1 dist/test/e2e/
