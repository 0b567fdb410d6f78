#!/usr/bin/env bash
# Build (once) what the GGUF exporter needs from llama.cpp, from the
# llama-cpp-python sdist (PyPI has no wheel; ../shared/STACK.md):
#
#   <dir>/llama_cpp_python-*.whl   the binding, with llama.cpp compiled by CMake:
#                                  its llama_model_quantize makes K-quants (q4_k_m),
#                                  and tests load GGUF files through it
#   <dir>/llama.cpp/               llama.cpp's own converter (convert_hf_to_gguf.py,
#                                  conversion/, gguf-py/) exactly as the sdist ships it
#
# Usage: hack/llama-cpp.sh [VENV]  -- with VENV, also installs the wheel there
# (idempotent). Cached under $KUBETUNE_CACHE keyed on this script, so a warm
# call returns at once. Prints <dir>. Dockerfile.trainer builds the same
# version the same way.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${KUBETUNE_CACHE:-$HOME/.cache/kubetune}
VERSION=0.3.36
# CPU only; no multimodal (llava/mtmd) library, tests, examples or tools: the
# exporter needs the core library (quantize) and the converter scripts.
# Not -march=native, as in Dockerfile.trainer: ggml then builds for AVX2/FMA/F16C
# and leaves AVX-512 and AMX out. On a CPU with AMX (Sapphire Rapids and later)
# a native build repacks weights for ggml's AMX matmul, which segfaults on the
# first decode of our tiny GGUF (llama.cpp#20824, still open); speed does not
# matter for quantizing and for the tests' few tokens.
CMAKE_FLAGS="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_NATIVE=OFF"
# The cache key covers what is built (bump RECIPE when the build steps change),
# not the installing part below it.
RECIPE=1
key=$(echo "$RECIPE $VERSION $CMAKE_FLAGS" | sha1sum | cut -c1-10)
dir="$cache/llama-cpp-$VERSION-$key"
log() { echo "[llama-cpp] $*" >&2; }
mkdir -p "$cache"
exec 9>"$cache/.llama-cpp.lock"
flock 9
if [ ! -f "$dir/.complete" ]; then
  start=$(date +%s)
  build=$(mktemp -d "$cache/.llama-cpp-build.XXXXXX")
  trap 'rm -rf "$build"' EXIT
  export PIP_CACHE_DIR=${PIP_CACHE_DIR:-$cache/pip}
  pip=(python3 -m pip --disable-pip-version-check)
  "${pip[@]}" download -q --no-deps --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -d "$build"
  tar -xzf "$build/llama_cpp_python-$VERSION.tar.gz" -C "$build"
  src="$build/llama_cpp_python-$VERSION"
  log "compiling llama.cpp (a few minutes on 2 cores)"
  CMAKE_ARGS="$CMAKE_FLAGS" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    "${pip[@]}" wheel -q --no-deps "$src" -w "$build/wheels"
  rm -rf "$dir" && mkdir -p "$dir/llama.cpp"
  mv "$build"/wheels/llama_cpp_python-*.whl "$dir/"
  for part in convert_hf_to_gguf.py conversion gguf-py LICENSE; do
    cp -r "$src/vendor/llama.cpp/$part" "$dir/llama.cpp/"
  done
  touch "$dir/.complete"
  log "built in $(( $(date +%s) - start ))s"
fi
if [ "$#" -ge 1 ]; then
  venv=$1
  # The venv records which build it holds: a new build of the same version
  # (other flags) replaces the binding, which a version check alone would keep.
  installed="$venv/.llama-cpp-build"
  if [ "$(cat "$installed" 2>/dev/null)" != "$key" ] || ! "$venv/bin/python" -c "import llama_cpp" 2>/dev/null; then
    # The binding's own requirements (numpy, jinja2, diskcache, typing-extensions)
    # and the converter's (sentencepiece, protobuf; gguf-py's tqdm, requests).
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$dir"/llama_cpp_python-*.whl
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -c "$root/hack/constraints.txt" \
      "$dir"/llama_cpp_python-*.whl sentencepiece protobuf tqdm requests
    echo "$key" > "$installed"
  fi
fi
echo "$dir"
