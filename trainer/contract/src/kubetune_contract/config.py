"""`TrainerConfig`: the JSON the operator renders into the trainer's ConfigMap
(and `kubetune run` into a file), and the trainer reads.

It is fully explicit: the trainer refuses a config that leaves any field out,
so no default of the trainer's own can ever apply. The user-facing sections
are the spec's own classes (`sections`); what the operator resolves (the
concrete strategy, the locations, the adapter for lora/qlora) is required here;
what only the trainer has (upload deadlines, the loss watchdog) is declared
here with its default, which the operator's renderer writes out. No secrets:
S3 keys, HF and tracking tokens reach the trainer as environment variables.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from .base import ApiModel, Rule
from .grpo import GrpoSpec
from .rules import FSDP_NOT_PROVEN, JOB_RULES
from .sections import (
    CheckpointSpec,
    ConcreteStrategy,
    DatasetSpec,
    DeepSpeedSpec,
    EvaluationSpec,
    KtoSpec,
    LoraSpec,
    Method,
    ModelSpec,
    Objective,
    OutputSpec,
    PreferenceSpec,
    QuantizationSpec,
    S3Location,
    TrackingSpec,
    TrainingSpec,
)

CONFIG_VERSION = 2


class JobRef(ApiModel):
    """Who this run is, for metric labels and logs."""

    namespace: str = Field(min_length=1, max_length=63)
    name: str = Field(min_length=1, max_length=253)
    # The FineTuneJob's UID: its checkpoints live under their own prefix and
    # record it (kubetune_contract.checkpoints). None for `kubetune run`.
    uid: str | None = Field(max_length=128, pattern=r"^[a-z0-9-]+$")


class ResolvedDistributed(ApiModel):
    """The parallelism the run uses: the operator resolves `auto` before rendering."""

    strategy: ConcreteStrategy
    deepspeed: DeepSpeedSpec | None

    rules = (
        FSDP_NOT_PROVEN,
        Rule("distributed.deepspeed is set exactly when strategy is deepspeed",
             lambda d: (d.deepspeed is not None) == (d.strategy == "deepspeed")),
    )


class CheckpointConfig(CheckpointSpec):
    """The spec's checkpoint section (its URI resolved) and how the trainer uploads."""

    # How long one checkpoint may keep retrying a failing store before it is
    # given up (counted in kubetune_trainer_checkpoint_upload_failures_total).
    upload_retry_seconds: float = Field(600.0, gt=0)
    # Of the pod's termination grace period, how long SIGTERM may spend saving
    # and uploading before the trainer exits regardless.
    sigterm_budget_seconds: float = Field(25.0, gt=0)
    # Upload in a background thread, or block the loop until each checkpoint is
    # committed (for stores that cannot take writes while the trainer writes).
    background_upload: bool = True


class SharedWorkConfig(ApiModel):
    """Where work that is the same for every trial of a sweep is kept once: the
    operator sets it for a FineTuneSweep's trials (a prefix of the sweep's own)."""

    uri: str = Field(min_length=1, max_length=2048)


class MetricsEndpoint(ApiModel):
    """The trainer's /metrics server (rank 0's is what the operator and Prometheus read)."""

    enabled: bool = True
    port: int = Field(9400, ge=0, le=65535)  # 0: any free port (tests)


class WatchdogConfig(ApiModel):
    """Stops the run with reason LossDiverged."""

    # NaN/inf loss always stops. Divergence: a logged loss above both `factor`
    # times and `margin` nats more than the starting loss (the lowest of the
    # first `warmupLogs` logged values).
    factor: float = Field(3.0, gt=1)
    margin: float = Field(1.0, ge=0)
    warmup_logs: int = Field(3, ge=1)


ADAPTER_RESOLVED = Rule("lora is required for methods lora and qlora (the operator resolves the adapter's shape)",
                        lambda c: c.method == "full" or c.lora is not None)
QUANTIZATION_RESOLVED = Rule("quantization is required for method qlora (the operator resolves 4-bit defaults)",
                             lambda c: c.method != "qlora" or c.quantization is not None)
NUMERIC_RESOLVED = Rule("evaluation.numeric is required with a numeric metric (the operator resolves the default decoding)",
                        lambda c: c.evaluation.resolved_numeric is c.evaluation.numeric)
FORMATS_RESOLVED = Rule("output.formats is required (the operator resolves the default formats)",
                        lambda c: c.output.formats is not None)
GGUF_RESOLVED = Rule("output.gguf is set exactly when output.formats lists gguf (the operator resolves its defaults)",
                     lambda c: (c.output.gguf is not None) == ("gguf" in (c.output.formats or ())))
ADAPTER_FROM_RESOLVED = Rule("model.adapterFrom must be an adapter URI here (the operator resolves a FineTuneJob's name to its status.output.adapterUri; kubetune run needs the URI)",
                             lambda c: c.model.adapter_from_job is None)
EPOCHS_RESOLVED = Rule("training needs epochs or maxSteps (the operator resolves the default epochs)",
                       lambda c: c.training.epochs is not None or c.training.max_steps is not None)


class TrainerConfig(ApiModel):
    rules = (*JOB_RULES, ADAPTER_RESOLVED, QUANTIZATION_RESOLVED, EPOCHS_RESOLVED, NUMERIC_RESOLVED, FORMATS_RESOLVED,
             GGUF_RESOLVED, ADAPTER_FROM_RESOLVED)

    version: Literal[2]
    job: JobRef
    model: ModelSpec
    dataset: DatasetSpec
    method: Method
    objective: Objective
    preference: PreferenceSpec | None
    kto: KtoSpec | None
    grpo: GrpoSpec | None
    lora: LoraSpec | None
    quantization: QuantizationSpec | None
    training: TrainingSpec
    distributed: ResolvedDistributed
    checkpoint: CheckpointConfig
    output: OutputSpec
    s3: S3Location
    metrics: MetricsEndpoint
    tracking: TrackingSpec
    evaluation: EvaluationSpec
    watchdog: WatchdogConfig
    shared: SharedWorkConfig | None

    def check_complete(self) -> None:
        missing = unset_fields(self)
        if missing:
            raise ValueError(f"fields not set: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}; "
                             "the operator renders every field explicitly (kubetune render shows the config)")

    def to_json(self) -> dict:
        return self.model_dump(by_alias=True, mode="json")


def unset_fields(model: BaseModel, prefix: str = "") -> list[str]:
    """Dotted camelCase paths of every field, at any depth, that the input left out."""
    missing = []
    for name, field in type(model).model_fields.items():
        path = f"{prefix}{field.alias or name}"
        if name not in model.model_fields_set:
            missing.append(path)
            continue
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            missing += unset_fields(value, f"{path}.")
    return missing


class ConfigError(ValueError):
    """A config the trainer cannot run, as one line naming the first bad field."""


def first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    err = errors[0]
    where = ".".join(str(p) for p in err["loc"]) or "<root>"
    message = str(err["msg"]).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {message}{more}"


def parse_config(data: object, source: str = "<config>") -> TrainerConfig:
    """Validate a loaded JSON object (camelCase, as rendered)."""
    try:
        return TrainerConfig.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {first_error(exc)}") from None
