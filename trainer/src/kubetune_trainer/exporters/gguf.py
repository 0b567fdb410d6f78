"""The merged model as one GGUF file (llama.cpp, Ollama, LM Studio), made by
llama.cpp's own converter (`convert_hf_to_gguf.py`, from the llama-cpp-python
sdist) and, for K-quants, llama.cpp's compiled quantizer (the binding's
`llama_model_quantize`). Both run as child processes: a converter that refuses
a model, or a quantizer that crashes, fails this format only.

`<output uri>/gguf/model-<quantization>.gguf`; `ggufUri` is the file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..storage import join
from .failures import ExportFailed
from .merged import merged_dir

if TYPE_CHECKING:
    from .inputs import ExportInputs

# Where llama.cpp's converter lives: a directory holding convert_hf_to_gguf.py,
# conversion/ and gguf-py/ (the trainer image: /opt/llama.cpp; tests: hack/llama-cpp.sh).
LLAMA_CPP_ENV = "KUBETUNE_LLAMA_CPP"
DEFAULT_LLAMA_CPP = "/opt/llama.cpp"
# Output types the pure-Python converter writes itself.
CONVERTER_TYPES = ("f16", "q8_0")
# K-quants: llama.cpp's ftype numbers (llama.h, enum llama_ftype).
K_QUANT_FTYPES = {"q4_k_m": 15}
CONVERT_TIMEOUT = 3600

QUANTIZE = """\
import sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = int(sys.argv[3])
code = llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), params)
sys.exit(f"llama_model_quantize returned {code}" if code else 0)
"""


def gguf_name(quantization: str) -> str:
    return f"model-{quantization}.gguf"


def export(inputs: ExportInputs) -> dict[str, str]:
    quantization = inputs.cfg.output.gguf.quantization
    local = inputs.scratch / "gguf"
    local.mkdir(parents=True, exist_ok=True)
    target = local / gguf_name(quantization)
    model = merged_dir(inputs)
    if quantization in CONVERTER_TYPES:
        convert(model, target, quantization)
    else:
        unquantized = inputs.scratch / "gguf-f16.gguf"
        convert(model, unquantized, "f16")
        quantize(unquantized, target, quantization)
        unquantized.unlink()
    key = f"gguf/{target.name}"
    inputs.output.put_file(key, target)
    return {"gguf": join(inputs.output.uri, key)}


def converter() -> Path:
    script = Path(os.environ.get(LLAMA_CPP_ENV, DEFAULT_LLAMA_CPP)) / "convert_hf_to_gguf.py"
    if not script.is_file():
        raise ExportFailed("gguf", f"llama.cpp's converter is not installed: no {script} (set {LLAMA_CPP_ENV})")
    return script


def convert(model: Path, target: Path, outtype: str) -> None:
    """llama.cpp's converter, HF directory -> GGUF file; its own error line on failure."""
    run("gguf", [sys.executable, str(converter()), str(model), "--outfile", str(target), "--outtype", outtype],
        what="llama.cpp's converter")


def quantize(source: Path, target: Path, quantization: str) -> None:
    run("gguf", [sys.executable, "-c", QUANTIZE, str(source), str(target), str(K_QUANT_FTYPES[quantization])],
        what="llama.cpp's quantizer")


def run(name: str, argv: list[str], what: str) -> None:
    """Run a tool as a child process; ExportFailed(`name`) with its last error line when it fails."""
    # The converter's own gguf-py, not whatever gguf package is installed.
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=CONVERT_TIMEOUT, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExportFailed(name, f"{what} did not run: {exc}") from None
    if proc.returncode != 0:
        raise ExportFailed(name, f"{what} failed: {error_line(proc.stderr or proc.stdout)}")


def error_line(output: str) -> str:
    """The line of a tool's output that says what went wrong (a traceback ends with it)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line or "Exception" in line]
    return ((errors or lines or ["no output"])[-1])[:500]
