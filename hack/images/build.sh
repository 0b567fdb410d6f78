#!/usr/bin/env bash
# Build kubetune's images with buildah (Debian's; no Docker engine, no daemon),
# from the repository's own Dockerfiles, in their CPU flavour: the same stages
# as the published CUDA images on a Debian 12 base made here (base.sh).
#
# Usage: hack/images/build.sh [operator] [trainer] [vllm]   (default: all three)
#
#   operator  Dockerfile.operator                 ghcr.io/kubetune/operator:<version>-cpu-<id>
#   trainer   Dockerfile.trainer                  ghcr.io/kubetune/trainer:<version>-cpu-<id>
#   vllm      tests/images/vllm/Containerfile     localhost/kubetune-test/vllm-cpu:<version>-<id>
#
# <id> is the first 12 hex digits of the image ID (the digest of its config,
# which names every layer), so a changed image never carries an old tag and an
# unchanged one keeps its tag. Layers are cached (buildah --layers, storage under
# ~/.cache/kubetune/containers), pip downloads too (~/.cache/kubetune/pip): a
# warm call with nothing changed takes seconds, a code change rebuilds only the
# last layers. Prints one `KUBETUNE_<NAME>_IMAGE=<ref>` line per image on stdout
# (what it built, merged into the refs file of this checkout, whose path
# `hack/images/refs.sh` prints), a summary of each image on stderr.
#
# Then it prunes the storage (disk is scarce): what no checkout on this machine
# last built goes (other tags of our repositories, outdated bases, the build
# cache only they used); kept are the refs files' images of every checkout
# that still exists, their layers and the build stages' caches.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/hack/images/env.sh"
names=("$@")
[ "${#names[@]}" -gt 0 ] || names=(operator trainer vllm)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/operator/pyproject.toml")
revision=$(git -C "$root" describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)

ensure_image_tools
eval "$(bash "$root/hack/images/base.sh")"   # RUNTIME_IMAGE, BUILD_IMAGE
mkdir -p "$images_cache/logs" "$images_cache/refs"
refs=$(bash "$root/hack/images/refs.sh")
exec 6>"$images_cache/.build.lock"
flock 6

# build NAME FILE CONTEXT REPOSITORY VERSION [BUILD-ARG...]
build() {
  local name=$1 file=$2 context=$3 repo=$4 tag_version=$5 start iid log
  shift 5
  start=$(date +%s)
  log=$images_cache/logs/$name.log
  images_log "building $name ($file; log: $log)"
  if ! bh build --layers --pull=false --network host --runtime runc "${ulimits[@]}" "${build_trust[@]}" \
      --file "$root/$file" --iidfile "$images_cache/.iid-$name" \
      --build-arg "BUILD_IMAGE=$BUILD_IMAGE" --build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE" \
      --build-arg "VERSION=$version" --build-arg "REVISION=$revision" "$@" \
      "$root/$context" >"$log" 2>&1; then
    tail -40 "$log" >&2
    images_log "$name: build failed (full log: $log)"
    return 1
  fi
  iid=$(sed 's/^sha256://' "$images_cache/.iid-$name")
  bh tag "$iid" "$repo:$tag_version-${iid:0:12}"
  built[$name]="$repo:$tag_version-${iid:0:12}"
  # The build stage's result, named so that a prune keeps its cached layers
  # (llama.cpp's and DeepSpeed's compiles): the same steps, all cached.
  if grep -q '^FROM .* AS build$' "$root/$file"; then
    bh build --layers --pull=false --network host --runtime runc "${ulimits[@]}" "${build_trust[@]}" \
      --file "$root/$file" --target build --tag "$stage_repo-$name:latest" \
      --build-arg "BUILD_IMAGE=$BUILD_IMAGE" --build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE" "$@" \
      "$root/$context" >>"$log" 2>&1
  fi
  images_log "$name: ${built[$name]} in $(( $(date +%s) - start ))s"
}

# What every existing checkout last built, the current bases, the build stages.
prune() {
  local keep=("$RUNTIME_IMAGE" "$BUILD_IMAGE") file checkout image removed=0
  for file in "$images_cache"/refs/*.env; do
    checkout=$(sed -n 's/^# checkout: //p' "$file")
    # (A file without its checkout's name is kept for two days.)
    if { [ -n "$checkout" ] && [ ! -d "$checkout/hack/images" ]; } \
       || { [ -z "$checkout" ] && [ -n "$(find "$file" -mtime +2)" ]; }; then
      rm -f "$file"
      continue
    fi
    mapfile -t -O "${#keep[@]}" keep < <(sed -n 's/^KUBETUNE_[A-Z]*_IMAGE=//p' "$file")
  done
  while read -r image; do
    case " ${keep[*]} " in *" $image "*) continue ;; esac
    bh rmi "$image" >/dev/null 2>&1 && removed=$((removed + 1))
  done < <(bh images --format '{{.Name}}:{{.Tag}}' | grep -E "^($(IFS='|'; echo "${repos[*]}")):" || true)
  # Untagged images nothing else builds on: the removed images' own layers and
  # build steps, down to what they share with kept ones (podman repeats the
  # prune until nothing is left to remove).
  pm image prune --force >/dev/null 2>&1 || images_log "warning: podman image prune failed"
  # Staging files an interrupted commit or push left behind.
  find "$images_tmp" -mindepth 1 -maxdepth 1 -mmin +120 -exec rm -rf {} +
  images_log "pruned: $removed old tags; storage $(du -sh "$storage_root" 2>/dev/null | cut -f1)"
}

declare -A built
stage_repo=localhost/kubetune/build-stage
repos=("${image_repos[@]}" localhost/kubetune/debian12-python localhost/kubetune/debian12-python-build)
for name in "${names[@]}"; do
  case $name in
    operator) build operator Dockerfile.operator . ghcr.io/kubetune/operator "$version-cpu" ;;
    # DeepSpeed's CPU Adam and its shared-memory collectives (what deepspeed.comm
    # loads on CPU: ZeRO runs) are compiled into its wheel; fused (CUDA) Adam needs nvcc.
    trainer) build trainer Dockerfile.trainer . ghcr.io/kubetune/trainer "$version-cpu" \
               --build-arg "DEEPSPEED_OPS=CPU_ADAM SHM_COMM" --build-arg "DS_ACCELERATOR=cpu" ;;
    vllm) build vllm tests/images/vllm/Containerfile . localhost/kubetune-test/vllm-cpu \
            "$(sed -n 's/^VLLM_VERSION=//p' "$root/hack/vllm-env.sh")-cpu" ;;
    *) echo "unknown image '$name': operator, trainer or vllm" >&2; exit 2 ;;
  esac
done

# This checkout's refs: the new ones over the previous ones.
for name in "${!built[@]}"; do
  var=KUBETUNE_${name^^}_IMAGE
  { echo "# checkout: $root"; grep -v -e "^$var=" -e "^# checkout: " "$refs" 2>/dev/null || true
    echo "$var=${built[$name]}"; } > "$refs.new"
  mv "$refs.new" "$refs"
done
prune
bash "$root/hack/images/describe.sh" "${built[@]}" >&2
for name in "${names[@]}"; do
  echo "KUBETUNE_${name^^}_IMAGE=${built[$name]}"
done
