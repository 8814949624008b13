#!/usr/bin/env bash
# Builds kiln, then runs every bench in turn (from the repository root).
# Each bench prints its figures and exits 1 if it missed a target; this
# script runs them all regardless and exits 1 if any missed.
set -u
cd "$(dirname "$0")/.."
npm run build --silent || exit 1
status=0
for bench in cached-graph local-context snapshot exec-chain parallel-stages cache-mount layer-export pull deep-graph sources-http sources-git prune-upper history-logs file-copy cache-export disk; do
  node "dist/bench/$bench.js" || status=1
  echo
done
exit "$status"
