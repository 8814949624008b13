#!/usr/bin/env bash
# The whole test suite, in tiers: lint; unit tests (no root, no external
# binary: they pass as any user); integration tests (root, real mounts, runc,
# containerd, a registry); then end-to-end tests of the CLI.
# Installs what it needs first (scripts/setup.sh). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Type-aware lint and the folder layering (eslint.config.js, .dependency-cruiser.cjs).
npm run --silent lint
node --test --test-concurrency=2 dist/test/unit/
# Integration tests run two files at a time; end-to-end tests one at a time,
# since several of them kill or race kiln processes on purpose.
node --test --test-concurrency=2 dist/test/integration/
node --test --test-concurrency=1 dist/test/e2e/
