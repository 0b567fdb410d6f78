"""What the trainer's termination message says of the run's final numbers:
the metrics it carries under `metrics`, by the names `status.metrics` shows
them (the operator copies exactly these)."""

from __future__ import annotations

FINAL_METRICS = ("trainLoss", "evalLoss", "tokensPerSecond")
