#!/usr/bin/env bash
# Debian's chromium for the report test (headless): installed once, idempotently,
# like Prometheus in hack/cluster-tools/build.sh; no browser is downloaded.
# Prints the binary's path.
set -euo pipefail
cache=${KUBETUNE_CACHE:-$HOME/.cache/kubetune}
mkdir -p "$cache"
if ! command -v chromium >/dev/null; then
  # One install at a time on this machine (apt takes its own lock; waiting beats failing).
  exec 9>"$cache/.chromium.lock"
  flock 9
  if ! command -v chromium >/dev/null; then
    echo "[chromium] installing Debian's chromium" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt=(apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends chromium)
    ("${apt[@]}" >/dev/null 2>&1) || (apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null && "${apt[@]}" >/dev/null)
  fi
fi
command -v chromium
