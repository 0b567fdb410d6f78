"""GGUF files as base models (`model.uri` naming one `.gguf` file).

A GGUF file, what llama.cpp and Ollama run, holds quantised weights and the
tokenizer as metadata. Before anything else the trainer reads its header
(`inspect`): a file that is not GGUF, one cut short, or one whose architecture
or tensor types transformers cannot turn back into weights is refused as
InvalidModel, naming the file, what it holds and what is supported. Then
transformers' own GGUF loader dequantises it into the training precision
(`dequantise`) and the result is saved as an ordinary Hugging Face directory
(`materialise`, once per file and precision): training, the base model's
evaluation, the merged and GGUF exports and serving all start from that
directory, as from any other base model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import InvalidModel

log = logging.getLogger("kubetune.gguf")

GGUF_MAGIC = b"GGUF"
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
COMPLETE_MARKER = ".kubetune-complete.json"
# Encoder-decoder architectures transformers reads from GGUF: kubetune trains causal language models.
NOT_CAUSAL = ("t5", "t5encoder", "umt5")


@dataclass(frozen=True)
class GgufFile:
    path: Path
    label: str  # the file as the user named it (the model URI)
    architecture: str
    name: str | None  # general.name, when the file has one
    tensor_types: dict[str, int]  # ggml type name -> how many tensors have it

    @property
    def quantization(self) -> str:
        """The file's quantisation as people name it: its most common tensor type (Q4_1, Q8_0, F16...)."""
        return max(self.tensor_types.items(), key=lambda item: item[1])[0]


@lru_cache(maxsize=1)
def supported_architectures() -> tuple[str, ...]:
    """The `general.architecture` values transformers loads as causal language models."""
    from transformers.integrations.gguf.gguf_conversion_mapping import GGUF_ARCHS  # the newer loader's
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    # The older loader's list also holds the metadata groups "general" and "tokenizer".
    older = [a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer", *NOT_CAUSAL)]
    return tuple(sorted({*older, *GGUF_ARCHS}))


@lru_cache(maxsize=None)
def supported_tensor_types(architecture: str) -> tuple[str, ...]:
    """The ggml tensor types transformers can dequantise for this architecture.

    transformers has two GGUF loaders: a newer one (torch kernels) for the
    architectures it lists, and the older one (the `gguf` package's numpy
    dequantisers) for the rest. Each supports the types it can unpack; the
    older one is probed with one zero block per type, so the list follows the
    installed `gguf` package instead of a copy of its table."""
    from transformers.integrations.gguf.utils import is_gguf_arch_supported

    if is_gguf_arch_supported(architecture):
        from transformers.integrations.gguf.dequant import GGML_NAME

        return tuple(sorted({"F32", "F16", "BF16", *GGML_NAME.values()}))
    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, dequantize

    names = []
    for qtype in GGMLQuantizationType:
        block, size = GGML_QUANT_SIZES[qtype]
        try:
            dequantize(np.zeros((1, size), dtype=np.uint8), qtype)
        except (NotImplementedError, ValueError):
            continue
        names.append(qtype.name)
    return tuple(sorted(names))


def inspect(path: Path, label: str) -> GgufFile:
    """The file's architecture and tensor types, or InvalidModel saying why it cannot be a base model."""
    from gguf import GGMLQuantizationType, GGUFReader

    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise InvalidModel(f"{label}: cannot read the file: {exc.strerror or exc}") from None
    if head != GGUF_MAGIC:
        raise InvalidModel(f"{label}: not a GGUF file (it starts with {head!r}, a GGUF file with {GGUF_MAGIC!r}); "
                           "model.uri ending in .gguf names a GGUF model file, as llama.cpp and Ollama use")
    try:
        reader = GGUFReader(str(path))
        tensors = list(reader.tensors)
        architecture = _text(reader, "general.architecture")
    except Exception as exc:  # noqa: BLE001 - the reader raises ValueError, IndexError, struct.error... on a damaged file
        raise InvalidModel(f"{label}: not a complete GGUF file ({size:,} bytes: {_first_line(exc)}); "
                           "it was probably cut short in a download or a copy: fetch it again") from None
    end = max((t.data_offset + int(t.n_bytes) for t in tensors), default=0)
    if end > size:
        raise InvalidModel(f"{label}: truncated: its tensors end at byte {end:,} but the file has {size:,} bytes; fetch it again")
    if not architecture:
        raise InvalidModel(f"{label}: the GGUF file names no architecture (general.architecture)")
    supported = supported_architectures()
    if architecture not in supported:
        raise InvalidModel(f"{label}: GGUF architecture {architecture!r} cannot be loaded by transformers as a causal language "
                           f"model; supported architectures: {', '.join(supported)}")
    types = Counter(GGMLQuantizationType(int(t.tensor_type)).name for t in tensors)
    readable = supported_tensor_types(architecture)
    unknown = sorted(set(types) - set(readable))
    if unknown:
        raise InvalidModel(f"{label}: GGUF tensor type{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} cannot be "
                           f"dequantised by transformers for architecture {architecture!r}; supported types: {', '.join(readable)}")
    return GgufFile(path, label, architecture, _text(reader, "general.name"), dict(types))


def _text(reader, key: str) -> str | None:
    field = reader.fields.get(key)
    return field.contents() if field is not None else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def dequantise(gguf: GgufFile, out: Path, precision: str) -> Path:
    """The GGUF model dequantised into `precision`, saved as a Hugging Face directory at `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf.path.parent), gguf.path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        # dequantize=True: plain dense weights to train (not GGUF blocks kept packed for inference).
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=getattr(torch, DTYPES[precision]),
                                                     quantization_config=GgufConfig(dequantize=True))
    except Exception as exc:  # noqa: BLE001 - whatever transformers raises for a file it cannot load is bad input
        raise InvalidModel(f"{gguf.label}: transformers cannot load this GGUF {gguf.architecture} model: {_first_line(exc)}") from None
    # The loader keeps the file's display name as the model's; the directory is the model now.
    model.config._name_or_path = gguf.label
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return out


def materialise(path: Path, cache: Path, precision: str, label: str) -> Path:
    """The Hugging Face directory of this GGUF file in `precision`, made once under `cache`."""
    stat = path.stat()
    source = {"file": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns, "precision": precision}
    out = cache / "gguf" / hashlib.sha1(json.dumps(source, sort_keys=True).encode()).hexdigest()[:16]
    marker = out / COMPLETE_MARKER
    if marker.is_file() and json.loads(marker.read_text()) == source:
        log.info("%s already dequantised at %s", label, out)
        return out
    gguf = inspect(path, label)
    log.info("dequantising %s (GGUF %s, %s) into %s", label, gguf.architecture, gguf.quantization, precision)
    dequantise(gguf, out, precision)
    marker.write_text(json.dumps(source))
    return out
