"""TensorBoard event files (torch's SummaryWriter), uploaded with the outputs."""

from __future__ import annotations

import json
from pathlib import Path


class TensorboardTracker:
    name = "tensorboard"
    run_url = None

    def __init__(self, local_dir: Path, config: dict):
        self.files_dir = local_dir
        self.config = config
        self._writer = None

    def start(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(self.files_dir))
        self._writer.add_text("config", f"```json\n{json.dumps(self.config, indent=1)}\n```", 0)

    def log_params(self, params: dict[str, str]) -> None:
        pass  # the config went in as text at start

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self._writer.add_scalar(tag, value, step)

    def finish(self, ok: bool = True) -> None:
        if self._writer is not None:
            self._writer.close()
