"""`FineTuneJob.status`: what the operator reports. Written explicitly by the
operator (never Kopf's handler-result storage)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from kubetune_contract import curves, fit
from kubetune_contract import mixing as mixing_contract
from kubetune_contract import tracking as tracking_contract
from kubetune_contract.base import ApiModel
from kubetune_contract.outputs import OUTPUT_KEY

# Queued: waiting for Kueue to admit the Job (spec.queueName), also after a preemption.
Phase = Literal["Pending", "Queued", "Running", "Succeeded", "Failed", "Suspended", "Serving", "Stopped"]
PHASES: tuple[str, ...] = ("Pending", "Queued", "Running", "Succeeded", "Failed", "Suspended", "Serving", "Stopped")
# Asked to stop for good (the `kubetune.io/stop` annotation, e.g. a sweep pruning
# its trial): the trainer checkpoints on SIGTERM, the job ends Stopped.
STOP_ANNOTATION = "kubetune.io/stop"


class ConditionType:
    """Condition types, one per question a user asks of a job."""

    VALID = "Valid"  # is the spec acceptable (image allowed, secrets present...)?
    TRAINING = "Training"  # are trainer pods running?
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    STOPPED = "Stopped"  # stopped for good before its last step (pruned by its sweep)?
    SERVING = "Serving"  # is the vLLM endpoint available?
    FIT = fit.CONDITION  # does the tuned model fit the task (not over-, under-fitted, unstable)?
    EXPORTED = "Exported"  # did every output format asked for get written?
    SERVING_GATED = "ServingGated"  # does spec.serving.gate hold serving back (True) or let it go ahead?
    ADMITTED = "Admitted"  # has Kueue admitted the Job (spec.queueName)?
    TRACKING = tracking_contract.CONDITION  # did the experiment tracker get the run, or was tracking degraded?
    REPORT_INVALID = "ReportInvalid"  # was the trainer's termination message not a report (ignored, the exit code decides)?


class Reason:
    """Machine-readable reasons. Constants so that tests and alerts match exactly."""

    ACCEPTED = "Accepted"
    INVALID_SPEC = "InvalidSpec"
    IMAGE_NOT_ALLOWED = "ImageNotAllowed"
    POLICY_DENIED = "PolicyDenied"  # a field the admin policy (KubetunePolicy) does not allow
    SECRET_NOT_USABLE = "SecretNotUsable"
    CHILD_CONFLICT = "ChildConflict"  # an object with a child's name that is not this job's (left untouched)
    REPORT_INVALID = "ReportInvalid"  # the termination message broke the report's schema, size or depth  # a referenced Secret without the policy's label
    SECRET_MISSING = "SecretMissing"
    # The API server answered 403 to the operator's own ServiceAccount (its RBAC lacks a verb).
    PERMISSION_DENIED = "PermissionDenied"
    # spec.model.adapterFrom naming a FineTuneJob: still running (waited for), failed (or without an
    # adapter), absent (waited for: it may be created next).
    ADAPTER_SOURCE_PENDING = "AdapterSourcePending"
    ADAPTER_SOURCE_FAILED = "AdapterSourceFailed"
    ADAPTER_SOURCE_MISSING = "AdapterSourceMissing"
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
    STOPPING = "Stopping"
    PRUNED = "Pruned"
    SERVING_PENDING = "ServingPending"
    SERVING_READY = "ServingReady"
    # The job's own Deployment answers with the previous spec.serving while a changed one rolls out.
    SERVING_ROLLING_OUT = "ServingRollingOut"
    SERVING_FAILED = "ServingFailed"
    # The Fit condition's reasons (kubetune_contract.fit, shared with the trainer's diagnosis).
    FIT_GOOD = fit.GOOD
    FIT_OVERFITTING = fit.OVERFITTING
    FIT_UNDERFITTING = fit.UNDERFITTING
    FIT_UNSTABLE = fit.UNSTABLE
    FIT_DIVERGED = fit.DIVERGED
    FIT_NO_VALIDATION_DATA = fit.NO_VALIDATION_DATA
    SERVING_REFUSED = "ServingRefused"  # e.g. a pool member that disagrees with the pool
    NOT_SERVED = "NotServed"  # training did not succeed: nothing to serve
    SERVING_DISABLED = "ServingDisabled"  # spec.serving.enabled turned false: taken off serving
    EXPORTED = "Exported"
    EXPORT_FAILED = "ExportFailed"
    # spec.serving.gate's verdicts (ServingGated; Serving is False with ServingGated when missed).
    GATE_PASSED = "GatePassed"
    GATE_MISSED = "GateMissed"
    GATE_NO_RESULT = "GateNoResult"
    SERVING_GATED = "ServingGated"
    # Kueue (spec.queueName)
    QUEUED = "Queued"
    ADMITTED = "Admitted"
    PREEMPTED = "Preempted"
    EVICTED = "Evicted"
    # A multi-node attempt ended because one of its pods failed.
    ATTEMPT_FAILED = "AttemptFailed"
    # spec.tracking (kubetune_contract.tracking, shared with the trainer)
    TRACKING_LOGGED = tracking_contract.LOGGED
    TRACKING_DEGRADED = tracking_contract.DEGRADED


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


class EvalPoint(ApiModel):
    step: int = Field(ge=1)
    eval_loss: float


class MetricsStatus(ApiModel):
    train_loss: float | None = None
    eval_loss: float | None = None
    eval_step: int | None = Field(None, description="The step evalLoss was measured at.")
    eval_curve: list[EvalPoint] | None = Field(
        None, max_length=curves.MAX_POINTS,
        description=f"Once training has ended: the validation loss at each evaluation during training, as the trainer recorded it "
                    f"(at most {curves.MAX_POINTS} points, spread evenly, first and last kept). Sweeps prune by it.")
    tokens_per_second: float | None = None
    reward_margin: float | None = Field(None, description="Preference objectives: mean chosen-minus-rejected implicit reward of the last logged batch.")
    reward_mean: float | None = Field(None, description="GRPO: mean weighted reward of the last logged batch.")
    reward_accuracy: float | None = Field(None, description="Preference objectives (DPO, ORPO): share of the last logged batch's pairs whose chosen reward is higher.")


class BestCheckpoint(ApiModel):
    uri: str | None = Field(None, max_length=2048, description="The committed checkpoint with the lowest validation loss (training.keepBest: the output).")
    step: int | None = None
    eval_loss: float | None = Field(None, description="Its validation loss.")


class ResumedFrom(ApiModel):
    """Another run's checkpoint this job continued (spec.checkpoint.resumeFrom)."""

    uri: str | None = Field(None, max_length=2048, description="The checkpoint continued.")
    step: int | None = None
    differs: list[Annotated[str, Field(max_length=256)]] = Field(
        default_factory=list, max_length=64, description="The settings this job trains with that the checkpoint's run did not.")


class CheckpointStatus(ApiModel):
    uri: str | None = Field(None, max_length=2048, description="Newest committed checkpoint (under this run's own prefix, run-<uid>).")
    step: int | None = None
    best: BestCheckpoint | None = Field(None, description="With training.keepBest: the checkpoint the output was made from.")
    resumed_from: ResumedFrom | None = Field(None, description="With checkpoint.resumeFrom: the checkpoint this run started from.")


class MetricComparison(ApiModel):
    """One metric of the base and the tuned model on the same rows."""

    base: float | None = None
    tuned: float | None = None
    change: float | None = Field(None, description="tuned - base, in the metric's units.")
    improvement: float | None = Field(None, description="How much better tuned is than base, as a fraction of base in the metric's good direction (0.68: 68% better; negative: worse).")
    better: bool | None = Field(None, description="Whether tuned beats base (by the metric's direction).")


class ParseRate(ApiModel):
    """Share of test answers with a parsable number (numeric metrics); the rest were scored as the training answers' mean."""

    base: float | None = Field(None, ge=0, le=1)
    tuned: float | None = Field(None, ge=0, le=1)


class EvaluationStatus(ApiModel):
    """The held-out evaluation (spec.evaluation): the full results are in the report and metrics.json."""

    primary: str | None = Field(None, max_length=64, description="The metric the job is judged by: the first of spec.evaluation.metrics, else testLoss, else evalLoss.")
    summary: str | None = Field(None, max_length=96, description="The primary metric, tuned (base), shown by kubectl get: e.g. MAE 47.1 (base 146).")
    verdict: str | None = Field(None, max_length=512, description="The report's first line: how tuned compares with base and the baselines, and the fit.")
    test_rows: int | None = Field(None, ge=0, description="Test rows evaluated.")
    metrics: dict[str, MetricComparison] | None = Field(None, max_length=32, description="Per metric (names as in spec.evaluation.metrics, plus evalLoss, testLoss, perplexity).")
    baselines: dict[str, dict[str, float]] | None = Field(None, max_length=8, description="Per baseline (mean, linear, randomForest): its score on each numeric metric, on the same test rows.")
    parse_rate: ParseRate | None = None
    validation: dict[str, float] | None = Field(None, max_length=16, description="spec.evaluation.validationMetrics: the tuned model on the validation rows (what a sweep chooses by; the test rows stay held out).")


class ServingStatus(ApiModel):
    endpoint: str | None = Field(None, max_length=2048, description="OpenAI-compatible base URL inside the cluster.")
    ready: bool = False
    model_name: str | None = Field(None, max_length=253, description="The model name to ask the endpoint for (the job's adapter, or its merged model).")
    pool: str | None = Field(None, max_length=63, description="The serving pool whose Deployment serves this job.")


class FineTuneJobStatus(ApiModel):
    phase: Phase | None = None
    conditions: list[Condition] = Field(
        default_factory=list, max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    progress: ProgressStatus | None = None
    metrics: MetricsStatus | None = None
    checkpoint: CheckpointStatus | None = None
    output: dict[Annotated[str, Field(pattern=OUTPUT_KEY.pattern)], Annotated[str, Field(max_length=2048)]] | None = Field(
        None, max_length=32,
        description="What the trainer exported, `<format>Uri` -> URI: adapterUri, mergedUri, reportUri, and any other format it wrote.")
    serving: ServingStatus | None = None
    evaluation: EvaluationStatus | None = None
    tracking: tracking_contract.TrackingOutcome | None = Field(None, description="spec.tracking: the tracker's run, the files uploaded with the outputs, whether tracking was degraded.")
    dataset: mixing_contract.DatasetStatus | None = Field(None, description="spec.dataset.sources: each source's rows read and rows the training consumed.")
    attempts: int | None = Field(None, ge=0, description="Training pods started (1 + restarts); each restart resumes from the newest checkpoint.")
    observed_generation: int | None = None
    start_time: str | None = None
    completion_time: str | None = None
