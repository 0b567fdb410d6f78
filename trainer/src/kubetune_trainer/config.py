"""`TrainerConfig`: the JSON the operator renders and the trainer reads.

The trainer owns this model; the operator's `render_trainer_config` produces it
from a FineTuneJob spec, and a contract test proves every rendered example
validates here. It holds no secrets: S3 keys, HF and tracking tokens arrive as
environment variables from Secret references.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from .errors import InvalidConfig

CONFIG_VERSION = 1
URI = r"^(hf|s3|pvc|file)://\S+$"
STORE_URI = r"^(s3|pvc|file)://\S+$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class JobRef(_Model):
    """Who this run is, for metric labels and logs (env KUBETUNE_NAMESPACE/KUBETUNE_JOB override)."""

    namespace: str = "default"
    name: str = "local"


class ModelSource(_Model):
    uri: str = Field(pattern=URI)
    revision: str | None = None
    trust_remote_code: bool = False


class Columns(_Model):
    instruction: str | None = None
    input: str | None = None
    output: str | None = None
    prompt: str | None = None
    completion: str | None = None
    messages: str | None = None
    text: str | None = None


class DataConfig(_Model):
    train_uri: str = Field(pattern=URI)
    eval_uri: str | None = Field(None, pattern=URI)
    eval_split: float | None = Field(None, gt=0, lt=0.5)
    format: Literal["auto", "instruction", "chat", "completion", "text"] = "auto"
    columns: Columns = Field(default_factory=Columns)
    max_seq_length: int = Field(2048, ge=16)
    packing: bool = False
    dedupe: bool = False

    @model_validator(mode="after")
    def _one_eval_source(self):
        if self.eval_uri and self.eval_split is not None:
            raise ValueError("set either evalUri or evalSplit, not both")
        return self


class LoraConfigSpec(_Model):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["all-linear"], min_length=1)


class QuantizationConfigSpec(_Model):
    bits: Literal[4, 8] = 4
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"


class EarlyStopping(_Model):
    patience: int = Field(3, ge=1)
    threshold: float = Field(0.0, ge=0)


class TrainingConfig(_Model):
    epochs: float | None = Field(None, gt=0)
    max_steps: int | None = Field(None, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial", "inverse_sqrt"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    batch_size: int = Field(4, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    seed: int = Field(42, ge=0)
    gradient_checkpointing: bool = False
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    eval_every_steps: int | None = Field(None, ge=1)
    log_every_steps: int = Field(10, ge=1)
    early_stopping: EarlyStopping | None = None

    @model_validator(mode="after")
    def _epochs_xor_steps(self):
        if self.epochs is not None and self.max_steps is not None:
            raise ValueError("set either epochs or maxSteps, not both")
        return self


class DeepSpeedConfigSpec(_Model):
    zero_stage: Literal[0, 1, 2, 3] = 2
    offload_optimizer: bool = False
    offload_params: bool = False


class DistributedConfig(_Model):
    # Concrete: the operator resolves `auto` before rendering.
    strategy: Literal["none", "ddp", "deepspeed", "fsdp"] = "none"
    deepspeed: DeepSpeedConfigSpec | None = None


class CheckpointConfig(_Model):
    uri: str | None = Field(None, pattern=STORE_URI)
    every_steps: int = Field(100, ge=1)
    keep_last: int = Field(3, ge=1)
    # How long one checkpoint may keep retrying a failing store before it is
    # given up (counted in kubetune_trainer_checkpoint_upload_failures_total).
    upload_retry_seconds: float = Field(600.0, gt=0)
    # Of the pod's termination grace period, how long SIGTERM may spend saving
    # and uploading before the trainer exits regardless.
    sigterm_budget_seconds: float = Field(25.0, gt=0)
    # Upload in a background thread (default) or block the loop until each
    # checkpoint is committed (for stores that cannot take concurrent writes;
    # the benchmark compares both).
    background_upload: bool = True


class OutputConfig(_Model):
    uri: str | None = Field(None, pattern=STORE_URI)
    merge: bool = False


class S3Config(_Model):
    """Where S3 is; the keys come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY."""

    endpoint: str | None = Field(None, pattern=r"^https?://\S+$")
    region: str | None = None


class MetricsConfig(_Model):
    enabled: bool = True
    port: int = Field(9400, ge=0, le=65535)  # 0: any free port (tests)


class TrackingConfig(_Model):
    backend: Literal["none", "wandb", "mlflow"] = "none"
    project: str | None = None
    uri: str | None = None


class EvaluationConfig(_Model):
    """Evaluation beyond eval loss."""

    # Evaluate the untouched base model on the eval set before training so the
    # report shows the improvement.
    compare_base: bool = True
    # Generate answers for up to `generateSamples` eval rows and score exact
    # match, token F1 and numeric MAE (0 disables).
    generate_samples: int = Field(0, ge=0)
    max_new_tokens: int = Field(32, ge=1)
    # For numeric answers: average the top-k candidate numbers weighted by
    # their probability instead of taking the greedy one (1 = greedy).
    numeric_top_k: int = Field(1, ge=1)


class WatchdogConfig(_Model):
    """Stops the run with reason LossDiverged."""

    # NaN/inf loss always stops. Divergence: a logged loss above both `factor`
    # times and `margin` nats more than the starting loss (the lowest of the
    # first `warmupLogs` logged values).
    factor: float = Field(3.0, gt=1)
    margin: float = Field(1.0, ge=0)
    warmup_logs: int = Field(3, ge=1)


class TrainerConfig(_Model):
    version: Literal[1] = CONFIG_VERSION
    job: JobRef = Field(default_factory=JobRef)
    model: ModelSource
    data: DataConfig
    method: Literal["lora", "qlora", "full"]
    lora: LoraConfigSpec | None = None
    quantization: QuantizationConfigSpec | None = None
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    s3: S3Config = Field(default_factory=S3Config)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    watchdog: WatchdogConfig = Field(default_factory=WatchdogConfig)

    @model_validator(mode="after")
    def _method_rules(self):
        if self.method == "full" and (self.lora is not None or self.quantization is not None):
            raise ValueError("method full takes neither lora nor quantization settings")
        if self.method == "qlora" and self.quantization is not None and self.quantization.bits != 4:
            raise ValueError("method qlora needs quantization.bits 4")
        if self.training.early_stopping and not (self.data.eval_uri or self.data.eval_split):
            raise ValueError("training.earlyStopping needs evaluation data (data.evalUri or data.evalSplit)")
        return self

    # Resolved views, so callers never re-derive method defaults.
    @property
    def resolved_lora(self) -> LoraConfigSpec | None:
        return None if self.method == "full" else (self.lora or LoraConfigSpec())

    @property
    def resolved_quantization(self) -> QuantizationConfigSpec | None:
        if self.method == "qlora":
            return self.quantization or QuantizationConfigSpec()
        return self.quantization

    def to_json(self) -> dict:
        return self.model_dump(by_alias=True, mode="json")


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "<root>"
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{where}: {err['msg']}{more}"


def parse_config(data: object, source: str = "<config>") -> TrainerConfig:
    """Validate a loaded JSON object; errors become one line naming the field."""
    try:
        return TrainerConfig.model_validate(data)
    except ValidationError as exc:
        raise InvalidConfig(f"{source}: {_first_error(exc)}") from None


def load_config(path: str | Path) -> TrainerConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidConfig(f"cannot read config {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidConfig(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    return parse_config(data, str(path))


_SECRET_KEY = re.compile(r"(secret|token|password|key|credential)", re.I)
_URL_USERINFO = re.compile(r"(\w+://)[^/@\s]+:[^/@\s]+@")


def redact(value):
    """A copy with anything secret-looking masked (for the one config log line)."""
    if isinstance(value, dict):
        return {k: ("***" if _SECRET_KEY.search(k) and v not in (None, "") and not isinstance(v, (dict, list, bool, int, float)) else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _URL_USERINFO.sub(r"\1***@", value)
    return value
