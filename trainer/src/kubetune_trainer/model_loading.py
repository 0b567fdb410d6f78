"""Resolve a model URI to a local directory, then load model + tokenizer.

Every scheme ends in the same `from_pretrained(local_dir)` call:
- file:// and pvc:// are mounted paths (pvc://claim/path → $KUBETUNE_PVC_ROOT/claim/path);
- s3:// is downloaded once into the work dir cache, verified against the
  listing (sizes) and marked complete, so a restart reuses it;
- hf:// goes through huggingface_hub with HF_TOKEN from the environment and
  the cache under the work dir (the root filesystem is read-only in the pod).

A URI ending in .gguf names one GGUF file instead (hf://org/name/file.gguf for
a file in a Hub repository): it is fetched the same ways, then checked and
dequantised into a Hugging Face directory in the cache (`gguf_base`), which is
what the rest of the run loads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from kubetune_contract.uris import is_gguf, split_hf_file

from .config import TrainerConfig
from .errors import InvalidModel
from .storage import UnsafeKey, fetch, inside, local_path, open_store

log = logging.getLogger("kubetune.model")
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model*.bin")
COMPLETE_MARKER = ".kubetune-complete.json"


def _check_model_dir(path: Path, uri: str) -> Path:
    if not path.is_dir():
        raise InvalidModel(f"{uri}: no model directory at {path}")
    if not (path / "config.json").is_file():
        raise InvalidModel(f"{uri}: no config.json in {path}; expected a Hugging Face model directory (save_pretrained)")
    if not any(any(path.glob(p)) for p in WEIGHT_PATTERNS):
        raise InvalidModel(f"{uri}: no weights in {path}; expected *.safetensors or pytorch_model*.bin")
    return path


def _download_s3(uri: str, cache: Path, cfg: TrainerConfig) -> Path:
    dst = cache / "models" / hashlib.sha1(uri.encode()).hexdigest()[:16]
    marker = dst / COMPLETE_MARKER
    store = open_store(uri, cfg.s3.endpoint, cfg.s3.region, deadline_s=300)
    objects = store.list()
    if not objects:
        raise InvalidModel(f"{uri}: no objects under this prefix")
    listing = {o.key: o.size for o in objects}
    if marker.is_file() and json.loads(marker.read_text()) == listing:
        log.info("model %s already cached at %s", uri, dst)
        return dst
    for key, size in listing.items():
        try:
            target = inside(dst, key)
        except UnsafeKey as exc:
            raise InvalidModel(f"{uri}: {exc}") from None
        if target.is_file() and target.stat().st_size == size:
            continue
        store.get_file(key, target)
        if target.stat().st_size != size:
            raise InvalidModel(f"{uri}/{key}: downloaded {target.stat().st_size} bytes, expected {size}")
    marker.write_text(json.dumps(listing))
    return dst


def _download_hf(uri: str, cache: Path, cfg: TrainerConfig) -> Path:
    from huggingface_hub import snapshot_download

    repo = uri[len("hf://"):]
    return Path(snapshot_download(
        repo, revision=cfg.model.revision, token=os.environ.get("HF_TOKEN") or None,
        cache_dir=str(cache / "hf"), allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"],
    ))


def _fetch_gguf(uri: str, cache: Path, cfg: TrainerConfig) -> Path:
    """The GGUF file on this machine: mounted, or downloaded once into the cache."""
    if uri.startswith(("file://", "pvc://")):
        path = local_path(uri)
        if not path.is_file():
            raise InvalidModel(f"{uri}: no such file ({path})")
        return path
    if uri.startswith("hf://"):
        from huggingface_hub import hf_hub_download

        repo, filename = split_hf_file(uri)
        try:
            return Path(hf_hub_download(repo, filename, revision=cfg.model.revision, token=os.environ.get("HF_TOKEN") or None,
                                        cache_dir=str(cache / "hf")))
        except Exception as exc:  # noqa: BLE001 - huggingface_hub's errors: not found, gated, offline...
            raise InvalidModel(f"{uri}: cannot download {filename} from {repo}: {str(exc).splitlines()[0][:200]}") from None
    store = open_store(uri, cfg.s3.endpoint, cfg.s3.region, deadline_s=300)
    if not store.is_file():
        raise InvalidModel(f"{uri}: no such object")
    return fetch(uri, cache / "models" / hashlib.sha1(uri.encode()).hexdigest()[:16], s3_endpoint=cfg.s3.endpoint,
                 s3_region=cfg.s3.region)


def resolve_model_dir(cfg: TrainerConfig, cache: Path, precision: str = "fp32") -> Path:
    """The base model's local Hugging Face directory (a GGUF file dequantised into `precision`)."""
    uri = cfg.model.uri
    if is_gguf(uri):
        from .gguf_base import materialise

        return materialise(_fetch_gguf(uri, cache, cfg), cache, precision, uri)
    if uri.startswith(("file://", "pvc://")):
        path = local_path(uri)
    elif uri.startswith("s3://"):
        path = _download_s3(uri, cache, cfg)
    elif uri.startswith("hf://"):
        path = _download_hf(uri, cache, cfg)
    else:  # the config pattern already refuses others
        raise InvalidModel(f"{uri}: unsupported scheme")
    return _check_model_dir(path, uri)


def load_tokenizer(model_dir: Path, cfg: TrainerConfig):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=cfg.model.trust_remote_code)
    except Exception as exc:  # noqa: BLE001
        raise InvalidModel(f"{cfg.model.uri}: cannot load tokenizer: {str(exc).splitlines()[0][:200]}") from None
    if tok.pad_token is None:
        # Padding must not be a token the model should learn to emit (eos is
        # fine here: labels at padded positions are -100).
        tok.pad_token = tok.eos_token
    return tok


def load_model(model_dir: Path, cfg: TrainerConfig, *, precision: str, device_map=None, quantize: bool = True):
    """The base model for training (quantised for qlora / 8-bit lora unless quantize=False)."""
    import torch
    from transformers import AutoModelForCausalLM

    from .translate import to_bnb_config

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    kwargs = dict(dtype=dtype, trust_remote_code=cfg.model.trust_remote_code)
    bnb = to_bnb_config(cfg) if quantize else None
    if bnb is not None:
        kwargs["quantization_config"] = bnb
        kwargs["device_map"] = device_map or "cpu"
    try:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    except (OSError, ValueError) as exc:  # what transformers raises for unreadable/unknown models; others stay retryable
        raise InvalidModel(f"{cfg.model.uri}: cannot load model: {str(exc).splitlines()[0][:200]}") from None
    if bnb is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.training.gradient_checkpointing)
    model.config.use_cache = False  # incompatible with gradient checkpointing, useless in training
    return model
