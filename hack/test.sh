#!/usr/bin/env bash
# `make test`: install what is missing (idempotent, cached under
# ~/.cache/kubetune), then run pytest on the given paths (default: everything).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(hack/python-env.sh)
KUBETUNE_TOOLS_BIN=$(bash hack/cluster-tools/build.sh)
export KUBETUNE_TOOLS_BIN
export PATH="$venv/bin:$KUBETUNE_TOOLS_BIN:$PATH"
# DeepSpeed compiles its CPU ops on first use (~100 s): compile once, reuse.
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/kubetune/torch-extensions}
export HF_HUB_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1 TOKENIZERS_PARALLELISM=false
export PYTHONDONTWRITEBYTECODE=1
if [ "$#" -eq 0 ]; then
  set -- tests
fi
exec python -m pytest "$@"
