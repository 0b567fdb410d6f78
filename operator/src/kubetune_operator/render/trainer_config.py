"""FineTuneJob spec -> the trainer's config JSON (`kubetune_contract.config.TrainerConfig`).

Pure and torch-free. Used by the operator's ConfigMap builder and by
`kubetune run`, so a local run trains exactly what the cluster would. Every
field is written out: the shared sections are dumped whole (their defaults are
declared once, in `kubetune_contract.sections`), what the spec leaves to the
operator is resolved here, and the result is validated as the trainer will
validate it before it leaves this function.

Secrets never appear here: S3 keys, HF and tracking tokens reach the trainer as
environment variables from Secret references.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubetune_contract.config import CONFIG_VERSION, CheckpointConfig, TrainerConfig, WatchdogConfig

from kubetune_contract.sections import GgufSpec, resolve_formats

from ..api.spec import FineTuneJobSpec


@dataclass(frozen=True)
class Placement:
    """What the environment decides for a job: where its checkpoints and outputs go
    when the spec names no location, where S3 is, which port /metrics listens on."""

    checkpoint_uri: str
    output_uri: str
    s3_endpoint: str | None
    s3_region: str | None
    metrics_port: int
    shared_uri: str | None = None  # a sweep trial's shared work (locations.shared_uri)
    uid: str | None = None  # the FineTuneJob's UID: its run's checkpoint prefix (None: `kubetune run`)


def _full(section) -> dict | None:
    return None if section is None else section.model_dump(by_alias=True, mode="json")


def _output(spec: FineTuneJobSpec, placement: Placement) -> dict:
    """The output section with its formats resolved (and GGUF's defaults when it is one)."""
    formats = resolve_formats(spec.method, spec.output)
    gguf = (spec.output.gguf or GgufSpec()) if "gguf" in formats else None
    return {**_full(spec.output), "uri": spec.output.uri or placement.output_uri, "merge": "merged" in formats,
            "formats": formats, "gguf": _full(gguf)}


def render_trainer_config(spec: FineTuneJobSpec, *, namespace: str, name: str, placement: Placement) -> dict:
    s3 = spec.credentials.s3
    config = {
        "version": CONFIG_VERSION,
        "job": {"namespace": namespace, "name": name, "uid": placement.uid},
        "model": _full(spec.model),
        "dataset": _full(spec.dataset),
        "method": spec.method,
        "objective": spec.objective,
        "preference": _full(spec.preference),
        "kto": _full(spec.kto),
        "grpo": _full(spec.grpo),
        "lora": _full(spec.resolved_lora),
        "quantization": _full(spec.resolved_quantization),
        "training": {**_full(spec.training), "epochs": spec.training.resolved_epochs},
        "distributed": {"strategy": spec.resolved_strategy, "deepspeed": _full(spec.resolved_deepspeed)},
        "checkpoint": _full(CheckpointConfig(**{**spec.checkpoint.model_dump(), "uri": spec.checkpoint.uri or placement.checkpoint_uri})),
        "output": _output(spec, placement),
        "s3": {"endpoint": (s3.endpoint if s3 else None) or placement.s3_endpoint,
               "region": (s3.region if s3 else None) or placement.s3_region},
        "metrics": {"enabled": True, "port": placement.metrics_port},
        "tracking": _full(spec.tracking),
        "evaluation": {**_full(spec.evaluation), "numeric": _full(spec.evaluation.resolved_numeric)},
        "watchdog": _full(WatchdogConfig()),
        "shared": {"uri": placement.shared_uri} if placement.shared_uri else None,
    }
    # What the trainer will refuse must fail here, at render time, not in the pod.
    TrainerConfig.model_validate(config, by_alias=True, by_name=False)
    return config
