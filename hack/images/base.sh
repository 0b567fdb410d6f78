#!/usr/bin/env bash
# Build (once) the Debian 12 base images the CPU flavour of our images builds
# on, from Debian's own packages with mmdebstrap (no registry is reachable, so
# no base can be pulled):
#
#   localhost/kubetune/debian12-python:<key>        runtime: Python 3.11 (with venv), CA certificates, OpenMP
#   localhost/kubetune/debian12-python-build:<key>  the same plus a C/C++ toolchain, CMake, Ninja, Python headers
#
# <key> is a hash of this recipe: a warm call returns at once. Prints
# `RUNTIME_IMAGE=<ref>` and `BUILD_IMAGE=<ref>`, the build arguments that select
# these bases in Dockerfile.operator and Dockerfile.trainer.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
SUITE=bookworm
MIRROR=${KUBETUNE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${KUBETUNE_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
RUNTIME_PACKAGES=python3,python3-venv,ca-certificates,libgomp1
BUILD_PACKAGES=$RUNTIME_PACKAGES,python3-dev,build-essential,cmake,ninja-build
key=$(cat "$0" | sha1sum | cut -c1-10)
runtime_ref=localhost/kubetune/debian12-python:$key
build_ref=localhost/kubetune/debian12-python-build:$key

# rootfs NAME PACKAGES: a minimal Debian with PACKAGES as a tarball, without
# documentation, manuals, translations or apt's package lists.
rootfs() {
  mmdebstrap --quiet --variant=minbase --include="$2" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --skip=output/dev \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*' \
    "$SUITE" "$work/$1.tar" \
    "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY_MIRROR $SUITE-security main" </dev/null
}

# commit NAME REF DESCRIPTION: the tarball as a one-layer image.
commit() {
  local ctr
  ctr=$(bh from scratch)
  bh add --quiet "$ctr" "$work/$1.tar" / >/dev/null
  bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd python3 --label "org.opencontainers.image.description=$3" \
    --label "io.kubetune.base.recipe=$key" --os linux --arch amd64 "$ctr"
  bh commit --quiet --rm "$ctr" "$2" >/dev/null
}

ensure_image_tools
exec 7>"$images_cache/.base.lock"
flock 7
if ! bh inspect --type image "$runtime_ref" >/dev/null 2>&1 || ! bh inspect --type image "$build_ref" >/dev/null 2>&1; then
  start=$(date +%s)
  work=$(mktemp -d "$images_tmp/base.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  images_log "making the Debian 12 bases with mmdebstrap (once; about a minute)"
  rootfs runtime "$RUNTIME_PACKAGES" & runtime_pid=$!
  rootfs build "$BUILD_PACKAGES" & build_pid=$!
  wait "$runtime_pid" && wait "$build_pid"
  commit runtime "$runtime_ref" "Debian 12 with Python 3.11 (kubetune's CPU base, from Debian packages)"
  commit build "$build_ref" "Debian 12 with Python 3.11 and a C/C++ toolchain (kubetune's CPU build base)"
  images_log "bases made in $(( $(date +%s) - start ))s"
fi
echo "RUNTIME_IMAGE=$runtime_ref"
echo "BUILD_IMAGE=$build_ref"
