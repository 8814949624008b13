#!/usr/bin/env bash
# Builds llb-examples/site.json into ./out/site (installs what it needs first).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
node bin/kiln.js build llb-examples/site.json \
  --local context=llb-examples/site-context \
  --output type=local,dest=out/site "$@"
echo "built llb-examples/site.json into out/site:" >&2
find out/site | sort >&2
