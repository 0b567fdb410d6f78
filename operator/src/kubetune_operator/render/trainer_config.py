"""FineTuneJob spec → the trainer's config JSON (`kubetune_trainer.config.TrainerConfig`).

Pure and dependency-free: the operator image has no torch and must not import
`kubetune_trainer`. Used by the operator's ConfigMap builder and by
`kubetune run`, so a local run trains exactly what the cluster would. A
contract test validates every rendered example against `TrainerConfig`.

Secrets never appear here: S3 keys, HF and tracking tokens reach the trainer as
environment variables from Secret references.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..api.spec import FineTuneJobSpec

CONFIG_VERSION = 1


@dataclass(frozen=True)
class RenderDefaults:
    """What the spec may leave out and the environment decides."""

    checkpoint_uri: str | None = None
    output_uri: str | None = None
    s3_endpoint: str | None = None
    s3_region: str | None = None
    metrics_port: int = 9400

    @classmethod
    def coerce(cls, value: "RenderDefaults | Mapping | None") -> "RenderDefaults":
        if value is None:
            return cls()
        if isinstance(value, RenderDefaults):
            return value
        # camelCase keys as the operator's builders pass them
        return cls(
            checkpoint_uri=value.get("checkpointUri"), output_uri=value.get("outputUri"),
            s3_endpoint=value.get("s3Endpoint"), s3_region=value.get("s3Region"),
            metrics_port=value.get("metricsPort", 9400),
        )


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def render_trainer_config(spec: FineTuneJobSpec, *, namespace: str, name: str,
                          defaults: RenderDefaults | Mapping | None = None) -> dict:
    d = RenderDefaults.coerce(defaults)
    ds, t = spec.dataset, spec.training
    columns = spec.dataset.columns.model_dump(by_alias=True, exclude_none=True) if ds.columns else {}
    lora = spec.resolved_lora
    quant = spec.resolved_quantization
    strategy = spec.resolved_strategy
    deepspeed = None
    if strategy == "deepspeed":
        z = spec.distributed.deepspeed
        deepspeed = {"zeroStage": z.zero_stage if z else (3 if spec.method == "full" else 2),
                     "offloadOptimizer": bool(z and z.offload_optimizer), "offloadParams": bool(z and z.offload_params)}
    training = _drop_none({
        # maxSteps wins; otherwise epochs (the spec's default is 3)
        "maxSteps": t.max_steps,
        "epochs": None if t.max_steps is not None else t.resolved_epochs,
        "learningRate": t.learning_rate,
        "lrScheduler": t.lr_scheduler,
        "warmupRatio": t.warmup_ratio,
        "batchSize": t.batch_size,
        "gradientAccumulationSteps": t.gradient_accumulation_steps,
        "weightDecay": t.weight_decay,
        "maxGradNorm": t.max_grad_norm,
        "seed": t.seed,
        "gradientCheckpointing": t.gradient_checkpointing,
        "precision": t.precision,
        "evalEverySteps": t.eval_every_steps,
        "logEverySteps": t.log_every_steps,
        "earlyStopping": {"patience": t.early_stopping.patience, "threshold": t.early_stopping.threshold} if t.early_stopping else None,
    })
    tracking = {"backend": spec.tracking.backend, **_drop_none({"project": spec.tracking.project, "uri": spec.tracking.uri})}
    s3 = spec.credentials.s3
    return {
        "version": CONFIG_VERSION,
        "job": {"namespace": namespace, "name": name},
        "model": _drop_none({"uri": spec.model.uri, "revision": spec.model.revision, "trustRemoteCode": spec.model.trust_remote_code}),
        "data": _drop_none({
            "trainUri": ds.train_uri, "evalUri": ds.eval_uri, "evalSplit": ds.eval_split, "format": ds.format,
            "columns": columns, "maxSeqLength": ds.max_seq_length, "packing": ds.packing, "dedupe": ds.dedupe,
        }),
        "method": spec.method,
        "lora": {"r": lora.r, "alpha": lora.alpha, "dropout": lora.dropout, "targetModules": list(lora.target_modules)} if lora else None,
        "quantization": {"bits": quant.bits, "quantType": quant.quant_type, "doubleQuant": quant.double_quant, "computeDtype": quant.compute_dtype} if quant else None,
        "training": training,
        "distributed": _drop_none({"strategy": strategy, "deepspeed": deepspeed}),
        "checkpoint": _drop_none({"uri": spec.checkpoint.uri or d.checkpoint_uri, "everySteps": spec.checkpoint.every_steps, "keepLast": spec.checkpoint.keep_last}),
        "output": _drop_none({"uri": spec.output.uri or d.output_uri, "merge": spec.output.merge}),
        "s3": _drop_none({"endpoint": (s3.endpoint if s3 else None) or d.s3_endpoint, "region": (s3.region if s3 else None) or d.s3_region}),
        "metrics": {"enabled": True, "port": d.metrics_port},
        "tracking": tracking,
    }
