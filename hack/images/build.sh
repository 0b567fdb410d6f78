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
  images_log "$name: ${built[$name]} in $(( $(date +%s) - start ))s"
}

declare -A built
for name in "${names[@]}"; do
  case $name in
    operator) build operator Dockerfile.operator . ghcr.io/kubetune/operator "$version-cpu" ;;
    # DeepSpeed's CPU Adam is compiled into its wheel; fused (CUDA) Adam needs nvcc.
    trainer) build trainer Dockerfile.trainer . ghcr.io/kubetune/trainer "$version-cpu" \
               --build-arg "DEEPSPEED_OPS=CPU_ADAM" --build-arg "DS_ACCELERATOR=cpu" ;;
    vllm) build vllm tests/images/vllm/Containerfile . localhost/kubetune-test/vllm-cpu \
            "$(sed -n 's/^VLLM_VERSION=//p' "$root/hack/vllm-env.sh")-cpu" ;;
    *) echo "unknown image '$name': operator, trainer or vllm" >&2; exit 2 ;;
  esac
done

# This checkout's refs: the new ones over the previous ones.
for name in "${!built[@]}"; do
  var=KUBETUNE_${name^^}_IMAGE
  { grep -v "^$var=" "$refs" 2>/dev/null || true; echo "$var=${built[$name]}"; } > "$refs.new"
  mv "$refs.new" "$refs"
done
bash "$root/hack/images/describe.sh" "${built[@]}" >&2
for name in "${names[@]}"; do
  echo "KUBETUNE_${name^^}_IMAGE=${built[$name]}"
done
