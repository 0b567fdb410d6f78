#!/usr/bin/env bash
# Build (once) and cache Kueue for the test control plane: the `kueue` manager
# binary from the Go module sigs.k8s.io/kueue (its own go.mod, no replace
# directives), plus the CRDs and webhook manifests of the same release, copied
# from the module so the harness needs nothing else. Kept apart from the other
# tools (a directory keyed on Kueue's version): only the Kueue tests need it, and
# changing its version never rebuilds Kubernetes. Idempotent: prints the
# directory and exits at once when it is there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck disable=SC1091
source "$here/versions.env"
cache=${KUBETUNE_CACHE:-$HOME/.cache/kubetune}
dir="$cache/kueue-$KUEUE_VERSION"
log() { echo "[kueue] $*" >&2; }
mkdir -p "$cache"
exec 9>"$cache/.kueue.lock"
flock 9
if [ ! -x "$dir/bin/kueue" ] || [ ! -f "$dir/webhooks.yaml" ]; then
  start=$(date +%s)
  export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local
  export GOPATH=${GOPATH:-$HOME/go} GOCACHE=${GOCACHE:-$HOME/.cache/go-build}
  log "building sigs.k8s.io/kueue $KUEUE_VERSION (cold: several minutes)"
  tmp="$dir.partial"
  rm -rf "$tmp"
  mkdir -p "$tmp/bin" "$tmp/crds"
  GOBIN="$tmp/bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION"
  src=$(go mod download -json "sigs.k8s.io/kueue@$KUEUE_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
  cp "$src"/config/components/crd/bases/*.yaml "$tmp/crds/"
  cp "$src/config/components/webhook/manifests.yaml" "$tmp/webhooks.yaml"
  chmod -R u+w "$tmp"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  log "kueue built in $(( $(date +%s) - start ))s"
fi
echo "$dir"
