#!/usr/bin/env bash
# Create (once) the development virtualenv outside the repo and install both
# packages into it. Idempotent: a stamp keyed on the pins and pyprojects makes
# a warm call return at once. Prints the venv path.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${KUBETUNE_CACHE:-$HOME/.cache/kubetune}
key=$(cat "$root/hack/constraints.txt" "$root/operator/pyproject.toml" "$root/trainer/pyproject.toml" "$root/trainer/contract/pyproject.toml" 2>/dev/null | sha1sum | cut -c1-10)
venv="$cache/venv-py311"
stamp="$venv/.kubetune-$key"
log() { echo "[python-env] $*" >&2; }
if [ ! -f "$stamp" ]; then
  start=$(date +%s)
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check -c "$root/hack/constraints.txt")
  export PIP_CACHE_DIR=${PIP_CACHE_DIR:-$cache/pip}
  "${pip[@]}" --upgrade pip setuptools wheel
  # torch first: everything else resolves against it quickly.
  "${pip[@]}" torch
  # The contract first: both packages depend on it and it is on no index.
  "${pip[@]}" -e "$root/trainer/contract" -e "$root/operator[test]" -e "$root/trainer[test,tracking]"
  # deepspeed's setup imports torch, so it cannot build in an isolated env.
  "${pip[@]}" --no-build-isolation deepspeed
  rm -f "$venv"/.kubetune-*
  touch "$stamp"
  log "installed in $(( $(date +%s) - start ))s"
else
  # Editable installs survive a fresh clone only if they point here.
  if ! "$venv/bin/python" -c "import kubetune_operator, kubetune_trainer, kubetune_contract, sys; sys.exit(0 if all(m.__file__.startswith('$root') for m in (kubetune_operator, kubetune_trainer, kubetune_contract)) else 1)" 2>/dev/null; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e "$root/trainer/contract" -e "$root/operator" -e "$root/trainer"
  fi
fi
echo "$venv"
