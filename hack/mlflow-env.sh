#!/usr/bin/env bash
# Create (once) the environment the tests run a real `mlflow server` from.
# Kept apart from the development venv: the trainer (and its image) carries
# only MLflow's client (mlflow-skinny); the server brings Flask, SQLAlchemy,
# pandas and more. The server's version is the client's pin in
# hack/constraints.txt. Idempotent: a stamp keyed on this script and that pin
# makes a warm call return at once. Prints the venv path.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${KUBETUNE_CACHE:-$HOME/.cache/kubetune}
version=$(sed -n 's/^mlflow-skinny==\([^ #]*\).*/\1/p' "$root/hack/constraints.txt")
[ -n "$version" ] || { echo "[mlflow-env] no mlflow-skinny pin in hack/constraints.txt" >&2; exit 1; }
key=$( (cat "$0"; echo "$version") | sha1sum | cut -c1-10)
venv="$cache/mlflow-venv-py311"
stamp="$venv/.kubetune-$key"
log() { echo "[mlflow-env] $*" >&2; }
mkdir -p "$cache"
exec 8>"$cache/.mlflow-env.lock"
flock 8
if [ ! -f "$stamp" ]; then
  start=$(date +%s)
  rm -rf "$venv"
  python3 -m venv "$venv"
  export PIP_CACHE_DIR=${PIP_CACHE_DIR:-$cache/pip}
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "mlflow==$version"
  touch "$stamp"
  log "mlflow $version installed in $(( $(date +%s) - start ))s"
fi
echo "$venv"
