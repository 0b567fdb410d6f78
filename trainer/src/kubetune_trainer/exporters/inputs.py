"""What every exporter is given (`ExportInputs`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import TrainerConfig
from ..storage import Store


@dataclass(frozen=True)
class ExportInputs:
    cfg: TrainerConfig
    # What the save step wrote, with the tokenizer: the adapter (lora, qlora)
    # or the whole trained model (full).
    trained: Path
    base_model: Path  # the base model's local directory
    tokenizer: Any
    precision: str  # the training precision ("bf16", "fp16", "fp32")
    scratch: Path  # a local directory an exporter may write into
    output: Store  # the output location; exporters upload under it
    # For the model card: the evaluation's results (metrics.json's "evaluation")
    # and the data's statistics (rows, content hash).
    evaluation: dict | None = None
    data_stats: dict | None = None
