"""`model.adapterFrom`: the adapter an earlier job trained, loaded onto the base
as the trainable adapter, so training continues it ("SFT, then DPO on top").

The recipe then gets a PEFT model and no LoRA config: TRL's DPO and KTO
trainers add a frozen copy of that adapter as the reference ("ref"), so the
reference is the SFT model, not the bare base; the output is again one adapter
on the original base.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .config import TrainerConfig
from .errors import InvalidModel
from .model_loading import _download_hf, _download_s3
from .storage import local_path

log = logging.getLogger("kubetune.model")


def adapter_dir(cfg: TrainerConfig, cache: Path) -> Path:
    """The adapter's local directory (downloaded once, as models are), checked to be a PEFT adapter."""
    uri = cfg.model.adapter_from
    if uri.startswith(("file://", "pvc://")):
        path = local_path(uri)
    elif uri.startswith("s3://"):
        path = _download_s3(uri, cache / "adapters", cfg)
    else:
        path = _download_hf(uri, cache / "adapters", cfg)
    if not (path / "adapter_config.json").is_file():
        raise InvalidModel(f"model.adapterFrom {uri}: no adapter_config.json in it; expected a PEFT adapter directory "
                           "(a FineTuneJob's output adapter)")
    return path


def continue_adapter(cfg: TrainerConfig, model, cache: Path):
    """The model with adapterFrom's adapter loaded and trainable; the model as it is without one."""
    if not cfg.model.adapter_from:
        return model
    from peft import PeftModel

    path = adapter_dir(cfg, cache)
    log.info("continuing adapter %s", cfg.model.adapter_from)
    return PeftModel.from_pretrained(model, str(path), is_trainable=True)


REFERENCE_ADAPTER = "ref"  # TRL's name for the frozen copy it adds as the reference


def drop_reference_adapter(model, trained: Path) -> None:
    """The saved weights without TRL's frozen reference copy (PEFT saves every adapter,
    the others in subdirectories): the output is the one trained adapter."""
    if REFERENCE_ADAPTER in (getattr(model, "peft_config", None) or {}):
        import shutil

        shutil.rmtree(trained / REFERENCE_ADAPTER, ignore_errors=True)
