"""A merged model as safetensors shards: for method full the trained model
itself; for lora/qlora (with `output.merge`) the base with the adapter merged
in, which serves without LoRA support; with its model card."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..storage import put_tree
from .card import card_text

if TYPE_CHECKING:
    from .inputs import ExportInputs


def export(inputs: ExportInputs) -> dict[str, str]:
    local = merged_dir(inputs)
    (local / "README.md").write_text(card_text(inputs, "transformers"))
    return {"merged": put_tree(inputs.output, local, "merged")}


def merged_dir(inputs: ExportInputs) -> Path:
    """The merged model's local directory, made once per run (the GGUF exporter
    converts the same one)."""
    if inputs.cfg.method == "full":
        return inputs.trained
    dst, done = inputs.scratch / "merged", inputs.scratch / "merged.complete"
    if not done.exists():
        _merge(inputs, dst)
        done.touch()
    return dst


def _merge(inputs: ExportInputs, dst: Path) -> None:
    """The base in the training precision, never quantised (a 4-bit base would
    round the merged weights), plus the adapter, merged."""
    from peft import PeftModel

    from ..model_loading import load_model

    shutil.rmtree(dst, ignore_errors=True)
    base = load_model(inputs.base_model, inputs.cfg, precision=inputs.precision, device_map="cpu", quantize=False)
    model = PeftModel.from_pretrained(base, str(inputs.trained)).merge_and_unload()
    model.config.use_cache = True
    model.save_pretrained(str(dst), safe_serialization=True, max_shard_size="5GB")
    inputs.tokenizer.save_pretrained(str(dst))
