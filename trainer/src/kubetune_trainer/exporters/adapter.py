"""The LoRA adapter (lora, qlora): `adapter_model.safetensors`, `adapter_config.json`
and the tokenizer, as PEFT and vLLM's `--lora-modules` load it, and its model
card. `adapter_config.json` names the base model as the user does (the hf://
id, or the URI), not the pod's download cache, so other tools can find it."""

from __future__ import annotations

import json
import shutil
from typing import TYPE_CHECKING

from ..storage import put_tree
from .card import base_model_name, card_text

if TYPE_CHECKING:
    from .inputs import ExportInputs


def export(inputs: ExportInputs) -> dict[str, str]:
    local = inputs.scratch / "adapter"
    shutil.rmtree(local, ignore_errors=True)
    shutil.copytree(inputs.trained, local)  # the save step wrote the adapter as PEFT saves it
    config = local / "adapter_config.json"
    data = json.loads(config.read_text())
    data["base_model_name_or_path"] = base_model_name(inputs.cfg.model.uri)
    config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    (local / "README.md").write_text(card_text(inputs, "peft"))
    return {"adapter": put_tree(inputs.output, local, "adapter")}
