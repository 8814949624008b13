#!/usr/bin/env bash
# Installs what kiln needs on a Debian 12 machine, idempotently: Debian
# packages (only the missing ones), node modules (npm ci, only when the lock
# file changed) and the compiled TypeScript. Every README command runs this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages kiln and its tests use. tar and util-linux (mount) come with
# Debian; runc runs exec ops; busybox-static gives tests and examples a
# rootfs built from nothing; containerd (with its runc v2 shim) backs the
# containerd worker; golang-github-containers-common (Debian 12's containers-common)
# provides the default seccomp profile, /usr/share/containers/seccomp.json;
# openssh-client gives ssh-agent for --ssh KEYFILE (and the ssh tests);
# git fetches git sources; openssh-server gives the git tests an sshd on 127.0.0.1;
# docker-registry (distribution), skopeo and umoci are the third-party tools
# the image tests check kiln's registry pushes and image archives with;
# containernetworking-plugins (bridge, host-local) and
# iptables give sandboxed exec ops their network (src/network/).
APT_PACKAGES=(tar util-linux e2fsprogs coreutils procps runc busybox-static containerd golang-github-containers-common openssh-client git openssh-server docker-registry skopeo umoci containernetworking-plugins iptables iproute2)
# openssl makes the HTTPS source tests' CA and certificate; curl is the floor
# of bench/sources-http; ca-certificates is the system CA bundle https:// sources trust.
APT_PACKAGES+=(openssl curl ca-certificates)
# tmux is the real terminal the tty progress tests read the screen of.
APT_PACKAGES+=(tmux)
# bzip2, xz-utils and zstd decompress the archives a copy with attemptUnpack
# (Dockerfile ADD) unpacks; gzip is node's own.
APT_PACKAGES+=(bzip2 xz-utils zstd)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "kiln setup: these Debian packages are missing: ${missing[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "kiln setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

lock_hash=$(sha256sum package-lock.json | cut -d' ' -f1)
stamp=node_modules/.kiln-lock-hash
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ]; then
  echo "kiln setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_hash" > "$stamp"
fi

# tsc, then the bundled CLI, dist/kiln.cjs (scripts/bundle.mjs).
npm run --silent build
