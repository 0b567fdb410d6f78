#!/usr/bin/env bash
# Make built images available to a containerd (CRI namespace k8s.io by
# default) under their own references, so pods that name them start without a
# pull (imagePullPolicy IfNotPresent or Never).
#
# Usage: hack/images/load.sh --address /run/containerd/containerd.sock [--namespace k8s.io] REF...
#        (REF as hack/images/build.sh prints them; without REF, this checkout's
#        last built images: hack/images/refs.sh)
#
# Idempotent and incremental. References are unique per image content
# (build.sh), so an image containerd already has under its reference is
# skipped without further work. The others move through a registry on
# loopback (the CNCF distribution registry, Debian's build, started for this
# call only, its data kept under ~/.cache/kubetune/images/registry): buildah
# pushes only the layers the registry lacks, containerd pulls only the layers
# it lacks, so a code change moves the small last layers, not the image.
# Layers are compressed with zstd (a registry push always compresses; zstd is
# several times faster than gzip, and containerd 1.6 unpacks it).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/hack/images/env.sh"
address="" namespace=k8s.io refs=()
while [ "$#" -gt 0 ]; do
  case $1 in
    --address) address=$2; shift 2 ;;
    --namespace) namespace=$2; shift 2 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) refs+=("$1"); shift ;;
  esac
done
[ -n "$address" ] || { echo "usage: $0 --address CONTAINERD_SOCKET [--namespace NS] [REF...]" >&2; exit 2; }
if [ "${#refs[@]}" -eq 0 ]; then
  mapfile -t refs < <(sed -n 's/^KUBETUNE_[A-Z]*_IMAGE=//p' "$(bash "$root/hack/images/refs.sh")")
  [ "${#refs[@]}" -gt 0 ] || { echo "no images built from this checkout yet: run hack/images/build.sh" >&2; exit 2; }
fi
ctr_() { ctr --address "$address" --namespace "$namespace" "$@"; }

missing=()
for ref in "${refs[@]}"; do
  if [ -z "$(ctr_ images ls --quiet "name==$ref")" ]; then
    missing+=("$ref")
  fi
done
if [ "${#missing[@]}" -eq 0 ]; then
  images_log "containerd at $address has all ${#refs[@]} images"
  exit 0
fi

# Debian's docker-registry (distribution 2.8), unpacked from its package into
# the cache: the binary only, no system service.
registry_version=2.8.2
registry_dir=$images_cache/registry-bin-$registry_version
if [ ! -x "$registry_dir/usr/bin/docker-registry" ]; then
  download=$(mktemp -d)
  (cd "$download" && { apt-get download -q "docker-registry=$registry_version*" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get download -q "docker-registry=$registry_version*" >/dev/null; }; })
  rm -rf "$registry_dir.tmp" && dpkg-deb -x "$download"/docker-registry_*.deb "$registry_dir.tmp"
  mv "$registry_dir.tmp" "$registry_dir" && rm -rf "$download"
fi

exec 5>"$images_cache/.load.lock"
flock 5
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$images_cache/registry"
config=$(mktemp)
cat > "$config" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $images_cache/registry}
  delete: {enabled: true}
http: {addr: "127.0.0.1:$port"}
EOF
"$registry_dir/usr/bin/docker-registry" serve "$config" >"$images_cache/logs/registry.log" 2>&1 &
registry_pid=$!
trap 'kill "$registry_pid" 2>/dev/null; wait "$registry_pid" 2>/dev/null; rm -f "$config"' EXIT
until curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1; do
  kill -0 "$registry_pid" 2>/dev/null || { cat "$images_cache/logs/registry.log" >&2; exit 1; }
  sleep 0.1
done

for ref in "${missing[@]}"; do
  start=$(date +%s%N)
  # The same repository and tag on the loopback registry (ghcr.io/kubetune/x:t -> 127.0.0.1:P/kubetune/x:t).
  path=${ref#*/}
  staged=127.0.0.1:$port/$path
  bh push --quiet --tls-verify=false --compression-format zstd "$ref" "docker://$staged"
  ctr_ images pull --plain-http "$staged" >/dev/null
  ctr_ images tag --force "$staged" "$ref" >/dev/null
  ctr_ images rm "$staged" >/dev/null
  images_log "loaded $ref in $(( ($(date +%s%N) - start) / 1000000 )) ms"
done
