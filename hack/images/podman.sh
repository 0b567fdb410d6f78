#!/usr/bin/env bash
# podman on the images build.sh built (same storage), with the runtime flags
# this host needs (env.sh); `run` and `create` get explicit ulimits. Pass your
# own `--network` (none, or host: the default bridge takes a private range).
# Usage: hack/images/podman.sh run --rm --network none IMAGE ...
set -euo pipefail
. "$(dirname "$0")/env.sh"
case ${1:-} in
  run|create) cmd=$1; shift; pm "$cmd" "${ulimits[@]}" "$@" ;;
  *) pm "$@" ;;
esac
