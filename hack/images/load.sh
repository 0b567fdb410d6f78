#!/usr/bin/env bash
# Make built images available to a containerd (CRI namespace k8s.io by
# default) under their own references, so pods that name them start without a
# pull (imagePullPolicy IfNotPresent or Never).
#
# Usage: hack/images/load.sh --address /run/containerd/containerd.sock [--namespace k8s.io] REF...
#        (REF as hack/images/build.sh prints them; without REF, this checkout's
#        last built images: hack/images/refs.sh)
#
# Idempotent and incremental; older builds of our images are removed from
# the containerd (prune_containerd). References are unique per image content
# (build.sh), so an image containerd already has under its reference is
# skipped without further work. The others move through a registry on
# loopback (the CNCF distribution registry, Debian's build, started for this
# call only, its data kept under ~/.cache/kubetune/images/registry): buildah
# pushes only the layers the registry lacks, containerd pulls only the layers
# it lacks, so a code change moves the small last layers, not the image.
# Layers are compressed with zstd (a registry push always compresses; zstd is
# several times faster than gzip, and containerd 1.6 unpacks it). The registry
# listens on the same loopback port every call where it can: buildah remembers
# which compressed layers a registry has by its address, and reuses them only
# there. Afterwards the registry keeps only the images some checkout's refs
# file names (garbage-collected), so it holds about one compressed copy.
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

# Older builds of our images leave this containerd (the trainer is several GB
# unpacked, and a node's store is kept across clusters): tags of our
# repositories that neither this call nor any checkout's refs file names.
prune_containerd() {
  local keep old
  keep=" $(images_in_refs_files | tr '\n' ' ') ${refs[*]} "
  while read -r old; do
    case $keep in *" $old "*) continue ;; esac
    ctr_ images rm "$old" >/dev/null && images_log "removed $old (an older build) from containerd at $address"
  done < <(ctr_ images ls --quiet | grep -E "^($(IFS='|'; echo "${image_repos[*]}")):" || true)
  # The CRI adds a reference by image ID (sha256:<config>) beside each name
  # it sees; removing the name leaves it, and with it the image's snapshots.
  # IDs that no named reference shares a manifest with go too.
  while read -r old; do
    ctr_ images rm --sync "$old" >/dev/null
  done < <(ctr_ images ls | awk 'NR > 1 {if ($1 ~ /^sha256:/) id[$1] = $3; else named[$3] = 1}
                                 END {for (r in id) if (!(id[r] in named)) print r}')
}

# A node runs containers from the unpacked snapshots; the compressed layers
# would stay beside them in the content store (the trainer's 2.8 GiB, per
# node) for nothing: nodes never push or export. The CRI drops them after its
# own pulls with discard_unpacked_layers; ctr 1.6 has no such switch, so the
# manifest's references to its layers are removed, which leaves them to the
# garbage collector (the config stays: the kubelet reads the image from it).
discard_unpacked_layers() {
  local manifest layer_refs
  manifest=$(ctr_ images ls "name==$1" | awk 'NR == 2 {print $3}')
  layer_refs=$(ctr_ content ls | awk -v d="$manifest" '$1 == d {print $NF}' | tr ',' '\n' \
    | sed -n 's/^\(containerd\.io\/gc\.ref\.content\.l\.[0-9]*\)=.*/\1=/p')
  [ -z "$layer_refs" ] || ctr_ content label "$manifest" $layer_refs >/dev/null
}

# (First: what goes makes room for what comes.)
prune_containerd
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
    || { apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null && apt-get download -q "docker-registry=$registry_version*" >/dev/null; }; })
  rm -rf "$registry_dir.tmp" && dpkg-deb -x "$download"/docker-registry_*.deb "$registry_dir.tmp"
  mv "$registry_dir.tmp" "$registry_dir" && rm -rf "$download"
fi

exec 5>"$images_cache/.load.lock"
flock 5
# A port derived from the cache's path, or any free one if that is taken.
port=$(python3 - "$(( 20000 + $(echo "$images_cache" | cksum | cut -d' ' -f1) % 10000 ))" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
PY
)
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
mkdir -p "$images_cache/logs"
"$registry_dir/usr/bin/docker-registry" serve "$config" >"$images_cache/logs/registry.log" 2>&1 &
registry_pid=$!
# Stopping the registry is expected to "fail" twice over: `wait` returns the
# TERM we sent (143) and a second call finds no process. Under `set -e` either
# would become the script's exit status after a successful load, so both are
# absorbed here, and the EXIT trap keeps the status the script had.
stop_registry() {
  [ -n "$registry_pid" ] || return 0
  kill "$registry_pid" 2>/dev/null || true
  wait "$registry_pid" 2>/dev/null || true
  registry_pid=""
}
trap 'status=$?; stop_registry; rm -f "$config"; exit "$status"' EXIT
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
  discard_unpacked_layers "$ref"
  # (Removing the staged name lets the garbage collector take the layers.)
  ctr_ images rm --sync "$staged" >/dev/null
  images_log "loaded $ref in $(( ($(date +%s%N) - start) / 1000000 )) ms"
done

# The registry down to what a checkout's refs file or this call names: other
# tags go, then what only they used (the registry must not serve meanwhile).
stop_registry
keep=" $(images_in_refs_files | sed 's|^[^/]*/||' | tr '\n' ' ') "
for ref in "${refs[@]}"; do keep+="${ref#*/} "; done
repositories=$images_cache/registry/docker/registry/v2/repositories
for tag_dir in "$repositories"/*/*/_manifests/tags/*; do
  [ -d "$tag_dir" ] || continue
  repo=${tag_dir#"$repositories"/}
  repo=${repo%%/_manifests/*}
  case $keep in *" $repo:${tag_dir##*/} "*) ;; *) rm -rf "$tag_dir" ;; esac
done
"$registry_dir/usr/bin/docker-registry" garbage-collect --delete-untagged "$config" >>"$images_cache/logs/registry.log" 2>&1 \
  || images_log "warning: the registry's garbage collection failed (see $images_cache/logs/registry.log)"
