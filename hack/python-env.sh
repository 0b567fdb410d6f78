#!/usr/bin/env bash
# Create (once) the development virtualenv outside the repo and install both
# packages into it. Idempotent: a stamp keyed on the pins and pyprojects makes
# a warm call return at once. Prints the venv path.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${KUBETUNE_CACHE:-$HOME/.cache/kubetune}
key=$(cat "$root/hack/constraints.txt" "$root/operator/pyproject.toml" "$root/trainer/pyproject.toml" 2>/dev/null | sha1sum | cut -c1-10)
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
  "${pip[@]}" -e "$root/operator[test]" -e "$root/trainer[test]"
  # deepspeed's setup imports torch, so it cannot build in an isolated env.
  "${pip[@]}" --no-build-isolation deepspeed
  rm -f "$venv"/.kubetune-*
  touch "$stamp"
  log "installed in $(( $(date +%s) - start ))s"
else
  # Editable installs survive a fresh clone only if they point here.
  if ! "$venv/bin/python" -c "import kubetune_operator, kubetune_trainer, sys; sys.exit(0 if kubetune_operator.__file__.startswith('$root') else 1)" 2>/dev/null; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e "$root/operator" -e "$root/trainer"
  fi
fi
echo "$venv"
