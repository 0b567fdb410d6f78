"""`kubetune merge-adapters`: what the CLI (operator package, no torch) asks the
trainer's merger to do. Declared once here; the CLI validates the user's
arguments with it, the trainer reads the same JSON."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import ApiModel, Rule
from .sections import S3Location
from .uris import UriType

# PEFT's `add_weighted_adapter` combination types: linear averages the A and B
# matrices (same rank), cat stacks them (rank is the sum: exactly the weighted
# sum of the updates), ties and dare_linear prune to `density` first.
MergeMethod = Literal["linear", "cat", "ties", "dare_linear"]
PRUNING_METHODS = ("ties", "dare_linear")


class SourceAdapter(ApiModel):
    uri: UriType("s3", "pvc", "file", description="A LoRA adapter directory (adapter_config.json, adapter_model.safetensors).")
    weight: float = Field(1.0, gt=0, le=10, description="Its weight in the merge.")


class MergeSpec(ApiModel):
    """Merge LoRA adapters trained on one base into one adapter."""

    rules = (
        Rule("density applies only to methods ties and dare_linear",
             lambda m: m.density is None or m.method in PRUNING_METHODS),
    )

    base: UriType("hf", "s3", "pvc", "file", description="The base model the adapters were trained on.")
    adapters: list[SourceAdapter] = Field(min_length=2, max_length=16, description="The adapters to merge, with their weights.")
    method: MergeMethod = Field("linear", description="How to combine them (PEFT's add_weighted_adapter).")
    density: float | None = Field(None, gt=0, le=1, description="ties, dare_linear: the fraction of each update kept (default 0.5).")
    output: UriType("s3", "pvc", "file", description="Where the merged adapter goes (with a model card, README.md).")
    name: str = Field("merged", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$", description="The merged adapter's name, in its model card.")
    s3: S3Location = Field(default_factory=S3Location, description="The S3-compatible store, when a URI is s3://.")

    @property
    def resolved_density(self) -> float | None:
        if self.method not in PRUNING_METHODS:
            return None
        return 0.5 if self.density is None else self.density
