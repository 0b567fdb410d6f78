#!/usr/bin/env bash
# Print the path of this checkout's refs file: `KUBETUNE_<NAME>_IMAGE=<ref>`
# lines for the images build.sh last built from it (sourceable by bash).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/hack/images/env.sh"
echo "$images_cache/refs/$(echo "$root" | sha1sum | cut -c1-10).env"
