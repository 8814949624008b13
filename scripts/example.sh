#!/usr/bin/env bash
# Builds llb-examples/multi-stage.json into ./out/multi-stage (installs what it
# needs first). The rootfs is made from nothing: the static busybox that
# Debian's busybox-static puts in /bin is the only input.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
node bin/kiln.js build llb-examples/multi-stage.json \
  --local tools=/bin \
  --output type=local,dest=out/multi-stage "$@"
echo "built llb-examples/multi-stage.json into out/multi-stage; its smoke test says:" >&2
cat out/multi-stage/usr/share/doc/hello/hello.txt >&2
