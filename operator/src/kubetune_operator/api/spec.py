"""`FineTuneJob.spec`: what a user asks for.

This module is the single source of truth for the API: the CRD in `crds/` is
generated from it (`kubetune crd`), and the README's spec reference too. Rules
the API server can check are given to it as schema constraints and CEL rules
(`x-kubernetes-validations`); each CEL rule is mirrored by a validator here with
the same message, so `kubetune validate` and `kubectl apply` agree.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from .base import ApiModel
from .uris import UriType

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
SECRET_KEY = r"^[-._a-zA-Z0-9]{1,253}$"
# The Kubernetes resource.Quantity grammar, as the API server's own schema has it.
QUANTITY = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
IMAGE_REF = r"^[a-z0-9][a-z0-9._/:@-]*[a-zA-Z0-9_.-]*$"

def _check_quantity(value: int | str) -> int | str:
    # Returned as given (8 stays an int) so manifests round-trip unchanged.
    if not re.match(QUANTITY, str(value)) or str(value).startswith("-"):
        raise ValueError(f"{value!r} is not a Kubernetes quantity; use e.g. 8, 7500m, 64Gi or 512Mi")
    return value


Quantity = Annotated[
    int | str,
    AfterValidator(_check_quantity),
    Field(
        json_schema_extra={
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY,
            "x-kubernetes-int-or-string": True,
        }
    ),
]


def cel(rule: str, message: str, field_path: str | None = None) -> dict:
    """A CEL rule for `x-kubernetes-validations`."""
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


def immutable(what: str) -> dict:
    return {"x-kubernetes-validations": [cel("self == oldSelf", f"{what} is immutable once the job is created")]}


# --------------------------------------------------------------------------- model


class ModelSpec(ApiModel):
    """The base model to fine-tune."""

    uri: UriType("hf", "s3", "pvc", "file", description="Where the base model lives: hf://org/name, s3://bucket/prefix, pvc://claim/path, or file://path (local runs and baked-in images).")
    revision: str | None = Field(None, max_length=256, description="Hugging Face revision (branch, tag or commit) for hf:// models.")
    trust_remote_code: bool = Field(False, description="Allow the model repository's own Python code to run. Off unless you trust the source.")

    @model_validator(mode="after")
    def _revision_only_for_hub(self):
        if self.revision and not self.uri.startswith("hf://"):
            raise ValueError("revision applies only to hf:// models; pin other sources by path")
        return self


# --------------------------------------------------------------------------- dataset

DatasetFormat = Literal["auto", "instruction", "chat", "completion", "text"]


class ColumnMapping(ApiModel):
    """Which of your columns hold each field of the chosen format (defaults are the usual names)."""

    instruction: str | None = Field(None, max_length=256, description="instruction format: the task (default `instruction`).")
    input: str | None = Field(None, max_length=256, description="instruction format: optional context (default `input`).")
    output: str | None = Field(None, max_length=256, description="instruction format: the answer trained on (default `output`).")
    prompt: str | None = Field(None, max_length=256, description="completion format: the prompt (default `prompt`).")
    completion: str | None = Field(None, max_length=256, description="completion format: the completion trained on (default `completion`).")
    messages: str | None = Field(None, max_length=256, description="chat format: the list of {role, content} messages (default `messages`).")
    text: str | None = Field(None, max_length=256, description="text format: the raw text (default `text`).")


class DatasetSpec(ApiModel):
    """Training (and optionally evaluation) data."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel("!(has(self.evalUri) && has(self.evalSplit))", "set either evalUri or evalSplit, not both"),
            ]
        }
    }

    train_uri: UriType("hf", "s3", "pvc", "file", description="Training data: a JSONL/JSON/CSV/Parquet file or a saved `datasets` directory.")
    eval_uri: UriType("hf", "s3", "pvc", "file", description="Held-out evaluation data (same formats).") | None = None
    eval_split: float | None = Field(None, gt=0, lt=0.5, description="Fraction of the training data held out for evaluation (deterministic by seed) when no evalUri is given.")
    format: DatasetFormat = Field("auto", description="Row format: instruction (alpaca), chat (messages), completion (prompt/completion), text, or auto-detect.")
    columns: ColumnMapping | None = Field(None, description="Column names, when yours differ from the format's defaults.")
    max_seq_length: int = Field(2048, ge=16, le=131072, description="Tokens per example; longer examples are truncated and counted in the report.")
    packing: bool = Field(False, description="Pack several examples per sequence (padding-free where supported) for throughput.")
    dedupe: bool = Field(False, description="Drop exact duplicate rows before training.")

    @model_validator(mode="after")
    def _one_eval_source(self):
        if self.eval_uri and self.eval_split is not None:
            raise ValueError("set either evalUri or evalSplit, not both")
        return self


# --------------------------------------------------------------------------- method

Method = Literal["lora", "qlora", "full"]

ALL_LINEAR = "all-linear"


class LoraSpec(ApiModel):
    """LoRA adapter shape (lora and qlora methods)."""

    r: int = Field(16, ge=1, le=1024, description="Adapter rank.")
    alpha: int = Field(32, ge=1, le=8192, description="Scaling numerator (the update is scaled by alpha/r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.*-]+$")]] = Field(
        default_factory=lambda: [ALL_LINEAR],
        min_length=1,
        max_length=64,
        description="Module names to adapt, or `all-linear` for every linear layer except the output head.",
        json_schema_extra={
            "default": [ALL_LINEAR],  # default_factory values are not in pydantic's schema
            "x-kubernetes-validations": [
                cel("!self.exists(m, m == 'all-linear') || size(self) == 1", "all-linear cannot be combined with other module names")
            ]
        },
    )

    @field_validator("target_modules")
    @classmethod
    def _all_linear_alone(cls, modules: list[str]) -> list[str]:
        if ALL_LINEAR in modules and len(modules) > 1:
            raise ValueError("all-linear cannot be combined with other module names")
        return modules


class QuantizationSpec(ApiModel):
    """bitsandbytes quantisation of the frozen base weights (qlora: 4-bit; lora: optionally 8-bit)."""

    bits: Literal[4, 8] = Field(4, description="4 (QLoRA) or 8.")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type.")
    double_quant: bool = Field(True, description="Quantise the quantisation constants too (saves ~0.4 bit/param).")
    compute_dtype: Literal["bfloat16", "float16", "float32"] = Field("bfloat16", description="dtype the de-quantised matmuls run in.")


# --------------------------------------------------------------------------- training

LrScheduler = Literal["cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial", "inverse_sqrt"]


class EarlyStoppingSpec(ApiModel):
    """Stop when eval loss stops improving (needs evaluation data)."""

    patience: int = Field(3, ge=1, le=1000, description="Evaluations without improvement before stopping.")
    threshold: float = Field(0.0, ge=0, description="Minimum decrease in eval loss that counts as improvement.")


class TrainingSpec(ApiModel):
    """Optimisation hyper-parameters. Defaults follow the conservative LoRA recipe."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel("!(has(self.epochs) && has(self.maxSteps))", "set either epochs or maxSteps, not both"),
            ]
        }
    }

    epochs: float | None = Field(None, gt=0, le=1000, description="Passes over the training data (default 3 when maxSteps is not set).")
    max_steps: int | None = Field(None, ge=1, le=10_000_000, description="Optimizer steps; overrides epochs.")
    learning_rate: float = Field(2e-4, gt=0, le=1, description="Peak learning rate.")
    lr_scheduler: LrScheduler = Field("cosine", description="Learning-rate schedule after warmup.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Fraction of steps spent warming up.")
    batch_size: int = Field(4, ge=1, le=4096, description="Examples per device per step.")
    gradient_accumulation_steps: int = Field(4, ge=1, le=4096, description="Micro-batches accumulated per optimizer step.")
    weight_decay: float = Field(0.0, ge=0, le=1, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, ge=0, le=1000, description="Gradient clipping norm (0 disables).")
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Seed for init, data order and the eval split.")
    gradient_checkpointing: bool = Field(True, description="Recompute activations to save memory (slower, much smaller).")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field("auto", description="Training precision; auto picks bf16 on GPUs that support it, fp32 on CPU.")
    eval_every_steps: int | None = Field(None, ge=1, le=10_000_000, description="Evaluate every N steps (default: once per epoch when there is eval data).")
    log_every_steps: int = Field(10, ge=1, le=100_000, description="Log and export metrics every N steps.")
    early_stopping: EarlyStoppingSpec | None = Field(None, description="Stop early on an eval-loss plateau.")

    @model_validator(mode="after")
    def _epochs_xor_steps(self):
        if self.epochs is not None and self.max_steps is not None:
            raise ValueError("set either epochs or maxSteps, not both")
        return self

    @property
    def resolved_epochs(self) -> float:
        return self.epochs if self.epochs is not None else 3.0


# --------------------------------------------------------------------------- resources & distribution


class Toleration(ApiModel):
    key: str | None = Field(None, max_length=317)
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = Field(None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(None, ge=0)


class ResourcesSpec(ApiModel):
    """What each training pod (one per node) asks the scheduler for."""

    gpus_per_node: int = Field(1, ge=0, le=16, description="GPUs per pod; one process runs per GPU. 0 trains on CPU.")
    gpu_resource_name: str = Field("nvidia.com/gpu", max_length=253, pattern=r"^[a-z0-9.-]+/[a-z0-9._-]+$", description="Extended resource name of the GPU.")
    cpu: Quantity | None = Field(None, description="CPU request and limit, e.g. 8 or 7500m.")
    memory: Quantity | None = Field(None, description="Memory request and limit, e.g. 64Gi.")
    node_selector: dict[str, Annotated[str, Field(max_length=63)]] = Field(default_factory=dict, max_length=32, description="Node labels the pods must match.")
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32, description="Taints the pods tolerate (e.g. GPU node taints).")


Strategy = Literal["auto", "none", "ddp", "deepspeed", "fsdp"]


class DeepSpeedSpec(ApiModel):
    """DeepSpeed ZeRO settings (strategy deepspeed, or auto when it picks DeepSpeed)."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel("!self.offloadParams || self.zeroStage == 3", "offloadParams needs zeroStage 3"),
            ]
        }
    }

    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="ZeRO stage: 2 shards optimizer state and gradients, 3 also parameters.")
    offload_optimizer: bool = Field(False, description="Keep optimizer state in CPU memory.")
    offload_params: bool = Field(False, description="Keep parameters in CPU memory (stage 3 only).")

    @model_validator(mode="after")
    def _offload_params_stage3(self):
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offloadParams needs zeroStage 3")
        return self


class DistributedSpec(ApiModel):
    """Multi-GPU and multi-node training. `nodes: 4` alone is enough for most jobs."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel("self.nodes == 1 || self.strategy != 'none'", "nodes > 1 needs a multi-node strategy (auto, ddp, deepspeed or fsdp)", ".strategy"),
                cel("!has(self.deepspeed) || self.strategy in ['auto', 'deepspeed']", "deepspeed settings need strategy deepspeed or auto", ".deepspeed"),
            ]
        }
    }

    nodes: int = Field(1, ge=1, le=256, description="Pods (nodes) to train on; >1 creates an Indexed Job and a headless Service for rendezvous.")
    strategy: Strategy = Field("auto", description="auto: DDP for adapters, DeepSpeed ZeRO for full fine-tuning; none: a single process.")
    deepspeed: DeepSpeedSpec | None = Field(None, description="ZeRO stage and offload.")

    @model_validator(mode="after")
    def _strategy_fits(self):
        if self.nodes > 1 and self.strategy == "none":
            raise ValueError("nodes > 1 needs a multi-node strategy (auto, ddp, deepspeed or fsdp)")
        if self.deepspeed is not None and self.strategy not in ("auto", "deepspeed"):
            raise ValueError("deepspeed settings need strategy deepspeed or auto")
        return self


# --------------------------------------------------------------------------- storage


class CheckpointSpec(ApiModel):
    """Where and how often to checkpoint. Jobs resume from the newest committed checkpoint."""

    uri: UriType("s3", "pvc", "file", description="Checkpoint prefix (default: the operator's bucket, <namespace>/<name>/checkpoints).") | None = None
    every_steps: int = Field(100, ge=1, le=10_000_000, description="Checkpoint every N optimizer steps (also on SIGTERM).")
    keep_last: int = Field(3, ge=1, le=100, description="Committed checkpoints kept; older ones are deleted.")


class OutputSpec(ApiModel):
    """Where the result goes."""

    uri: UriType("s3", "pvc", "file", description="Output prefix for the adapter, merged model and report (default: the operator's bucket, <namespace>/<name>/output).") | None = None
    merge: bool = Field(False, description="Also write the base model with the adapter merged in.")


class ServingSpec(ApiModel):
    """Serve the result with vLLM once training succeeds."""

    enabled: bool = Field(False, description="Create a vLLM Deployment and Service after training succeeds.")
    replicas: int = Field(1, ge=0, le=64, description="vLLM replicas.")
    image: str | None = Field(None, max_length=512, pattern=IMAGE_REF, description="vLLM image (default: the operator's).")
    mode: Literal["adapter", "merged"] = Field("adapter", description="adapter: base model + LoRA adapter (--enable-lora); merged: the merged model (needs output.merge).")
    gpus: int = Field(1, ge=0, le=16, description="GPUs per serving replica.")
    extra_args: list[Annotated[str, Field(max_length=1024)]] = Field(default_factory=list, max_length=64, description="Extra vLLM arguments, e.g. --max-model-len=8192.")


class SecretKeyRef(ApiModel):
    """A key of a Secret in the job's namespace."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="Secret name.")
    key: str = Field(max_length=253, pattern=SECRET_KEY, description="Key within the Secret.")


class S3Credentials(ApiModel):
    """S3 (or S3-compatible) access for models, data, checkpoints and outputs."""

    secret_name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="Secret holding the access key pair.")
    access_key_id_key: str = Field("AWS_ACCESS_KEY_ID", max_length=253, pattern=SECRET_KEY, description="Key of the access key id in the Secret.")
    secret_access_key_key: str = Field("AWS_SECRET_ACCESS_KEY", max_length=253, pattern=SECRET_KEY, description="Key of the secret access key in the Secret.")
    endpoint: str | None = Field(None, max_length=2048, pattern=r"^https?://[^\s/]+(/[^\s]*)?$", description="Endpoint of an S3-compatible store (MinIO, Ceph...); AWS when unset.")
    region: str | None = Field(None, max_length=64, pattern=r"^[a-z0-9-]+$", description="Bucket region.")


class CredentialsSpec(ApiModel):
    """Secret references. Secret values never appear in status, events, logs or the rendered config."""

    s3: S3Credentials | None = Field(None, description="S3 credentials (default: the operator's S3 Secret).")
    hf_token: SecretKeyRef | None = Field(None, description="Hugging Face token for gated hf:// models.")
    tracking: SecretKeyRef | None = Field(None, description="API key of the experiment tracker (WANDB_API_KEY or MLFLOW_TRACKING_TOKEN).")


class TrackingSpec(ApiModel):
    """Optional experiment tracking; metrics always go to Prometheus regardless."""

    backend: Literal["none", "wandb", "mlflow"] = Field("none", description="Experiment tracker.")
    project: str | None = Field(None, max_length=128, description="W&B project or MLflow experiment name.")
    uri: str | None = Field(None, max_length=2048, pattern=r"^https?://[^\s]+$", description="MLflow tracking URI or W&B host.")


# --------------------------------------------------------------------------- the spec


class FineTuneJobSpec(ApiModel):
    """What to fine-tune, on what, how, and what to do with the result."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel("self.method != 'qlora' || !has(self.quantization) || self.quantization.bits == 4", "method qlora needs quantization.bits 4", ".quantization.bits"),
                cel("self.method != 'full' || !has(self.quantization)", "method full cannot use quantization: quantized weights cannot be trained; use lora or qlora", ".quantization"),
                cel("self.method != 'lora' || !has(self.quantization) || self.quantization.bits == 8", "method lora quantizes only to 8 bits; use method qlora for 4-bit", ".quantization.bits"),
                cel("self.method != 'full' || !has(self.lora)", "lora settings apply only to methods lora and qlora", ".lora"),
                cel(
                    "!has(self.serving) || !self.serving.enabled || self.serving.mode != 'merged' || (has(self.output) && self.output.merge)",
                    "serving.mode merged needs output.merge: true",
                    ".serving.mode",
                ),
                cel(
                    "!has(self.training) || !has(self.training.earlyStopping) || (has(self.dataset.evalUri) || has(self.dataset.evalSplit))",
                    "training.earlyStopping needs evaluation data: set dataset.evalUri or dataset.evalSplit",
                    ".training.earlyStopping",
                ),
                cel(
                    "!has(self.tracking) || self.tracking.backend != 'wandb' || (has(self.credentials) && has(self.credentials.tracking))",
                    "tracking.backend wandb needs credentials.tracking (a Secret key holding WANDB_API_KEY)",
                    ".tracking.backend",
                ),
            ]
        }
    }

    model: ModelSpec = Field(description="The base model.", json_schema_extra=immutable("model"))
    dataset: DatasetSpec = Field(description="Training and evaluation data.", json_schema_extra=immutable("dataset"))
    method: Method = Field(description="lora: LoRA adapter on a bf16/fp32 base; qlora: LoRA on a 4-bit base; full: every weight.", json_schema_extra=immutable("method"))
    lora: LoraSpec | None = Field(None, description="Adapter shape (lora/qlora; defaults r=16, alpha=32, all-linear).")
    quantization: QuantizationSpec | None = Field(None, description="Base-weight quantisation (qlora defaults to 4-bit nf4 with double quantisation).")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Hyper-parameters.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="GPUs, CPU, memory and placement per pod.")
    distributed: DistributedSpec = Field(default_factory=DistributedSpec, description="Nodes and parallelism strategy.")
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec, description="Checkpoint location, frequency and retention.")
    output: OutputSpec = Field(default_factory=OutputSpec, description="Output location and merging.")
    serving: ServingSpec = Field(default_factory=ServingSpec, description="vLLM serving of the result.")
    credentials: CredentialsSpec = Field(default_factory=CredentialsSpec, description="Secret references.")
    tracking: TrackingSpec = Field(default_factory=TrackingSpec, description="W&B / MLflow.")
    image: str | None = Field(None, max_length=512, pattern=IMAGE_REF, description="Trainer image (default: the operator's; must match the operator's allowed prefixes).")
    suspend: bool = Field(False, description="Stop the pods, keep checkpoints; set back to false to resume from the newest checkpoint.")
    backoff_limit: int = Field(3, ge=0, le=100, description="Pod failures retried (each retry resumes from the newest checkpoint).")
    active_deadline_seconds: int | None = Field(None, ge=1, description="Fail the job after this many seconds of training.")
    ttl_seconds_after_finished: int | None = Field(None, ge=0, description="Delete the finished training Job (not this resource) after N seconds.")
    queue_name: str | None = Field(None, max_length=63, pattern=DNS_LABEL, description="Kueue LocalQueue to admit the job through.")
    priority_class_name: str | None = Field(None, max_length=253, pattern=DNS_SUBDOMAIN, description="PriorityClass of the training pods.")

    @model_validator(mode="after")
    def _cross_field_rules(self):
        # Same rules, same messages as the CEL rules above.
        q = self.quantization
        if self.method == "qlora" and q is not None and q.bits != 4:
            raise ValueError("method qlora needs quantization.bits 4")
        if self.method == "full" and q is not None:
            raise ValueError("method full cannot use quantization: quantized weights cannot be trained; use lora or qlora")
        if self.method == "lora" and q is not None and q.bits != 8:
            raise ValueError("method lora quantizes only to 8 bits; use method qlora for 4-bit")
        if self.method == "full" and self.lora is not None:
            raise ValueError("lora settings apply only to methods lora and qlora")
        if self.serving.enabled and self.serving.mode == "merged" and not self.output.merge:
            raise ValueError("serving.mode merged needs output.merge: true")
        if self.training.early_stopping is not None and not (self.dataset.eval_uri or self.dataset.eval_split):
            raise ValueError("training.earlyStopping needs evaluation data: set dataset.evalUri or dataset.evalSplit")
        if self.tracking.backend == "wandb" and self.credentials.tracking is None:
            raise ValueError("tracking.backend wandb needs credentials.tracking (a Secret key holding WANDB_API_KEY)")
        return self

    # Resolved views: what the method implies when the user left a section out.
    @property
    def resolved_lora(self) -> LoraSpec | None:
        if self.method == "full":
            return None
        return self.lora or LoraSpec()

    @property
    def resolved_quantization(self) -> QuantizationSpec | None:
        if self.method == "qlora":
            return self.quantization or QuantizationSpec()
        return self.quantization

    @property
    def resolved_strategy(self) -> str:
        """The concrete strategy `auto` stands for, given the method and the GPUs."""
        d = self.distributed
        if d.strategy != "auto":
            return d.strategy
        processes = d.nodes * max(self.resources.gpus_per_node, 1)
        if processes == 1:
            return "none"
        if self.method == "full" or d.deepspeed is not None:
            return "deepspeed"
        return "ddp"
