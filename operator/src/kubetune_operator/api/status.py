"""`FineTuneJob.status`: what the operator reports. Written explicitly by the
operator (never Kopf's handler-result storage)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import ApiModel

Phase = Literal["Pending", "Running", "Succeeded", "Failed", "Suspended", "Serving"]
PHASES: tuple[str, ...] = ("Pending", "Running", "Succeeded", "Failed", "Suspended", "Serving")
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


class ConditionType:
    """Condition types, one per question a user asks of a job."""

    VALID = "Valid"  # is the spec acceptable (image allowed, secrets present...)?
    TRAINING = "Training"  # are trainer pods running?
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    SERVING = "Serving"  # is the vLLM endpoint available?


class Reason:
    """Machine-readable reasons. Constants so that tests and alerts match exactly."""

    ACCEPTED = "Accepted"
    INVALID_SPEC = "InvalidSpec"
    IMAGE_NOT_ALLOWED = "ImageNotAllowed"
    SECRET_MISSING = "SecretMissing"
    JOB_CREATED = "JobCreated"
    PODS_PENDING = "PodsPending"
    TRAINING_STARTED = "TrainingStarted"
    RESTARTED = "Restarted"
    COMPLETED = "Completed"
    IMAGE_PULL_FAILED = "ImagePullFailed"
    OOM_KILLED = "OOMKilled"
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    LOSS_DIVERGED = "LossDiverged"
    INVALID_DATASET = "InvalidDataset"
    INVALID_MODEL = "InvalidModel"
    INVALID_CONFIG = "InvalidConfig"
    CHECKPOINT_FAILED = "CheckpointFailed"
    SUSPENDED = "Suspended"
    RESUMED = "Resumed"
    SERVING_PENDING = "ServingPending"
    SERVING_READY = "ServingReady"
    SERVING_FAILED = "ServingFailed"


class Condition(ApiModel):
    type: str = Field(max_length=64)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(max_length=128)
    message: str = Field("", max_length=4096)
    last_transition_time: str | None = Field(None, description="RFC 3339 time of the last status change.")
    observed_generation: int | None = None


class ProgressStatus(ApiModel):
    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None
    percent: float | None = Field(None, ge=0, le=100)
    eta: str | None = Field(None, max_length=64, description="Estimated time left, e.g. 12m30s.")
    summary: str | None = Field(None, max_length=64, description="step/total (percent), shown by kubectl get.")


class MetricsStatus(ApiModel):
    train_loss: float | None = None
    eval_loss: float | None = None
    tokens_per_second: float | None = None


class CheckpointStatus(ApiModel):
    uri: str | None = Field(None, max_length=2048, description="Newest committed checkpoint.")
    step: int | None = None


class OutputStatus(ApiModel):
    adapter_uri: str | None = Field(None, max_length=2048)
    merged_uri: str | None = Field(None, max_length=2048)
    report_uri: str | None = Field(None, max_length=2048)


class ServingStatus(ApiModel):
    endpoint: str | None = Field(None, max_length=2048, description="OpenAI-compatible base URL inside the cluster.")
    ready: bool = False


class FineTuneJobStatus(ApiModel):
    phase: Phase | None = None
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    progress: ProgressStatus | None = None
    metrics: MetricsStatus | None = None
    checkpoint: CheckpointStatus | None = None
    output: OutputStatus | None = None
    serving: ServingStatus | None = None
    attempts: int | None = Field(None, ge=0, description="Training pods started (1 + restarts); each restart resumes from the newest checkpoint.")
    observed_generation: int | None = None
    start_time: str | None = None
    completion_time: str | None = None
