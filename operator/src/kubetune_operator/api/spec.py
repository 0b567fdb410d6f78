"""`FineTuneJob.spec`: what a user asks for.

The CRD in `crds/` is generated from these models (`kubetune crd`), and the
README's spec reference too. The sections the trainer consumes as they are
(model, dataset, lora, quantization, training, checkpoint, output, tracking,
evaluation)
are declared once in `kubetune_contract.sections`; this module adds what only
the operator acts on (resources, distribution, serving, credentials, the Job's
own settings) and composes the whole spec. Rules the API server can check are
given to it as schema constraints and CEL rules; each cross-field rule is one
`Rule` (CEL text, Python check, one message), so `kubetune validate`,
`kubectl apply` and the trainer agree.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from kubetune_contract import evaluation_metrics
from kubetune_contract.base import ApiModel, Rule, no_expansion, no_expansion_field
from kubetune_contract.grpo import GrpoSpec
from kubetune_contract.rules import (
    ADAPTER_FROM_KEEPS_ITS_SHAPE,
    ADAPTER_FROM_NEEDS_ADAPTER,
    EARLY_STOPPING_NEEDS_EVAL,
    FSDP_NOT_PROVEN,
    FULL_EXPORTS_NO_ADAPTER,
    KEEP_BEST_NEEDS_EVAL,
    METHOD_RULES,
    OBJECTIVE_RULES,
    VALIDATION_METRICS_NEED_EVAL,
    VALIDATION_METRICS_NEED_SFT,
)
from kubetune_contract.sections import (
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
    resolve_formats,
)
from kubetune_contract.uris import GGUF_SUFFIX

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


def immutable(what: str) -> dict:
    return {"x-kubernetes-validations": [{"rule": "self == oldSelf", "message": f"{what} is immutable once the job is created"}]}


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


Strategy = Literal["auto", ConcreteStrategy]


class DistributedSpec(ApiModel):
    """Multi-GPU and multi-node training. `nodes: 4` alone is enough for most jobs."""

    rules = (
        Rule("nodes > 1 needs a multi-node strategy (auto, ddp or deepspeed)",
             lambda d: d.nodes == 1 or d.strategy != "none",
             cel="self.nodes == 1 || self.strategy != 'none'", field_path=".strategy"),
        FSDP_NOT_PROVEN,
        Rule("deepspeed settings need strategy deepspeed or auto",
             lambda d: d.deepspeed is None or d.strategy in ("auto", "deepspeed"),
             cel="!has(self.deepspeed) || self.strategy in ['auto', 'deepspeed']", field_path=".deepspeed"),
    )

    nodes: int = Field(1, ge=1, le=256, description="Pods (nodes) to train on; >1 creates an Indexed Job and a headless Service for rendezvous.")
    strategy: Strategy = Field("auto", description="auto: DDP for adapters, DeepSpeed ZeRO for full fine-tuning; none: a single process; fsdp: refused until a GPU run proves it (use deepspeed, zeroStage 3).")
    deepspeed: DeepSpeedSpec | None = Field(None, description="ZeRO stage and offload.")


# --------------------------------------------------------------------------- serving, credentials


# vLLM's --max-lora-rank takes one of these (vllm/config/lora.py); an adapter of
# rank r needs the smallest one >= r.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
POOL_NAME_LENGTH = 40


GateMetricName = Literal[tuple(evaluation_metrics.METRICS)]


class ServingGate(ApiModel):
    """What the tuned model must achieve on its evaluation to be served."""

    rules = (
        Rule("set at most one of serving.gate.threshold and serving.gate.minImprovement",
             lambda g: g.threshold is None or g.min_improvement is None,
             cel="!(has(self.threshold) && has(self.minImprovement))"),
    )

    metric: GateMetricName = Field(
        description=f"The metric to judge by: {', '.join(evaluation_metrics.METRICS)} (a task metric must be listed in evaluation.metrics).")
    threshold: float | None = Field(
        None, description="The tuned value must be better than this (lower for losses and errors, higher for scores; fractions as 0-1). Without it and without minImprovement the tuned model must beat the base model.")
    min_improvement: float | None = Field(
        None, gt=-1, le=100, description="The tuned model must improve on the base model by at least this fraction of the base value, in the metric's good direction (0.1: 10% better).")


class ServingSpec(ApiModel):
    """Serve the result with vLLM once training succeeds."""

    enabled: bool = Field(False, description="Create a vLLM Deployment and Service after training succeeds.")
    replicas: int = Field(1, ge=0, le=64, description="vLLM replicas.")
    image: str | None = Field(None, max_length=512, pattern=IMAGE_REF, description="vLLM image (default: the operator's).")
    mode: Literal["adapter", "merged"] | None = Field(
        None, description="adapter: the base model + this job's LoRA adapter (vLLM multi-LoRA); merged: the merged model (method full, or merged in output.formats). Default: adapter for lora/qlora, merged for full.")
    gpus: int = Field(1, ge=0, le=16, description="GPUs per serving replica.")
    extra_args: list[Annotated[str, Field(max_length=1024, json_schema_extra=no_expansion_field()), AfterValidator(no_expansion)]] = Field(
        default_factory=list, max_length=64, description="Extra vLLM arguments, e.g. --max-model-len=8192 (no $( : the kubelet would expand it).")
    pool: str | None = Field(
        None, max_length=POOL_NAME_LENGTH, pattern=DNS_LABEL,
        description="Serve with every job of this namespace that names the same pool and base model: one vLLM Deployment, each job's adapter under its own model name (status.serving.modelName). Members must agree on image, replicas, gpus and extraArgs.")
    gate: ServingGate | None = Field(
        None, description="Serve only when the evaluation passes this gate; a job that misses it ends Succeeded, unserved, with the numbers in its ServingGated condition.")

    def resolved_mode(self, method: str) -> str:
        return self.mode or ("merged" if method == "full" else "adapter")


def vllm_lora_rank(r: int) -> int:
    """The smallest --max-lora-rank vLLM accepts that serves rank `r`."""
    return next(rank for rank in VLLM_LORA_RANKS if rank >= r)


class SecretKeyRef(ApiModel):
    """A key of a Secret in the job's namespace."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="Secret name.")
    key: str = Field(max_length=253, pattern=SECRET_KEY, description="Key within the Secret.")


class S3Credentials(S3Location):
    """S3 (or S3-compatible) access for models, data, checkpoints and outputs."""

    secret_name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="Secret holding the access key pair.")
    access_key_id_key: str = Field("AWS_ACCESS_KEY_ID", max_length=253, pattern=SECRET_KEY, description="Key of the access key id in the Secret.")
    secret_access_key_key: str = Field("AWS_SECRET_ACCESS_KEY", max_length=253, pattern=SECRET_KEY, description="Key of the secret access key in the Secret.")


class CredentialsSpec(ApiModel):
    """Secret references. Secret values never appear in status, events, logs or the rendered config."""

    s3: S3Credentials | None = Field(None, description="S3 credentials (default: the operator's S3 Secret).")
    hf_token: SecretKeyRef | None = Field(None, description="Hugging Face token for gated hf:// models.")
    tracking: SecretKeyRef | None = Field(None, description="API key of the experiment tracker (WANDB_API_KEY or MLFLOW_TRACKING_TOKEN).")


# --------------------------------------------------------------------------- the spec

# CEL: the serving mode with its default (adapter for lora/qlora, merged for full).
_CEL_SERVES = "has(self.serving) && self.serving.enabled"
_CEL_ADAPTER_MODE = f"{_CEL_SERVES} && (has(self.serving.mode) ? self.serving.mode == 'adapter' : self.method != 'full')"


def _serves_adapter(s) -> bool:
    return s.serving.enabled and s.serving.resolved_mode(s.method) == "adapter"


SERVING_MERGED_NEEDS_MERGE = Rule(
    "serving.mode merged needs a merged model: method full, or merged in output.formats (output.merge: true)",
    lambda s: not (s.serving.enabled and s.serving.resolved_mode(s.method) == "merged" and s.method != "full"
                   and "merged" not in resolve_formats(s.method, s.output)),
    cel=f"!({_CEL_SERVES} && has(self.serving.mode) && self.serving.mode == 'merged' && self.method != 'full') || "
        "(has(self.output) && ((has(self.output.formats) && 'merged' in self.output.formats) || (has(self.output.merge) && self.output.merge)))",
    field_path=".serving.mode",
)
SERVING_ADAPTER_NEEDS_ADAPTER = Rule(
    "serving.mode adapter needs method lora or qlora: method full has no adapter; serve mode merged",
    lambda s: not (s.serving.enabled and s.serving.mode == "adapter" and s.method == "full"),
    cel=f"!({_CEL_SERVES} && has(self.serving.mode) && self.serving.mode == 'adapter' && self.method == 'full')",
    field_path=".serving.mode",
)
SERVING_ADAPTER_NEEDS_EXPORT = Rule(
    "serving.mode adapter needs adapter in output.formats",
    lambda s: not _serves_adapter(s) or "adapter" in resolve_formats(s.method, s.output),
    cel=f"!({_CEL_ADAPTER_MODE}) || !has(self.output) || !has(self.output.formats) || 'adapter' in self.output.formats",
    field_path=".output.formats",
)
SERVING_LORA_RANK = Rule(
    f"vLLM serves LoRA adapters up to rank {VLLM_LORA_RANKS[-1]}: lower lora.r, or set serving.mode merged",
    lambda s: not _serves_adapter(s) or s.lora is None or s.lora.r <= VLLM_LORA_RANKS[-1],
    cel=f"!({_CEL_ADAPTER_MODE}) || !has(self.lora) || self.lora.r <= {VLLM_LORA_RANKS[-1]}",
    field_path=".lora.r",
)
SERVING_ADAPTER_LOADABLE = Rule(
    "vLLM cannot load DoRA adapters or adapters with modulesToSave: set serving.mode merged, or drop lora.useDora and lora.modulesToSave",
    lambda s: not _serves_adapter(s) or s.lora is None or not (s.lora.use_dora or s.lora.modules_to_save),
    cel=f"!({_CEL_ADAPTER_MODE}) || !has(self.lora) || ((!has(self.lora.useDora) || !self.lora.useDora) && "
        "(!has(self.lora.modulesToSave) || size(self.lora.modulesToSave) == 0))",
    field_path=".lora",
)
SERVING_POOL_NEEDS_ADAPTER = Rule(
    "serving.pool serves several adapters on one base model: it needs serving.mode adapter (method lora or qlora)",
    lambda s: not (s.serving.enabled and s.serving.pool and not _serves_adapter(s)),
    cel=f"!({_CEL_SERVES} && has(self.serving.pool)) || ({_CEL_ADAPTER_MODE})",
    field_path=".serving.pool",
)
SERVING_ADAPTER_NEEDS_HF_BASE = Rule(
    f"serving.mode adapter serves the adapter on its base model, and vLLM cannot apply a LoRA adapter to a {GGUF_SUFFIX} "
    "base: set serving.mode merged (merged in output.formats), which serves the base dequantised with the adapter merged in",
    lambda s: not (_serves_adapter(s) and s.model.gguf),
    cel=f"!({_CEL_ADAPTER_MODE}) || !self.model.uri.endsWith('{GGUF_SUFFIX}')",
    field_path=".serving.mode",
)
_TEST_LOSSES = [n for n in evaluation_metrics.LOSSES if evaluation_metrics.metric(n).split == "test"]
_CEL_GATE = "has(self.serving) && has(self.serving.gate)"
SERVING_GATE_EVALUATED = Rule(
    "serving.gate.metric must be evaluated: a task metric listed in evaluation.metrics, testLoss or perplexity "
    "with evaluation.testUri or evaluation.testSplit, evalLoss with dataset.evalUri or dataset.evalSplit",
    lambda s: s.serving.gate is None or _gate_metric_evaluated(s),
    cel=f"!({_CEL_GATE}) || (self.serving.gate.metric == 'evalLoss' ? (has(self.dataset.evalUri) || has(self.dataset.evalSplit)) : "
        f"self.serving.gate.metric in {_TEST_LOSSES} ? (has(self.evaluation) && (has(self.evaluation.testUri) || has(self.evaluation.testSplit))) : "
        "(has(self.evaluation) && has(self.evaluation.metrics) && self.serving.gate.metric in self.evaluation.metrics))",
    field_path=".serving.gate.metric",
)
SERVING_GATE_NEEDS_BASE = Rule(
    "serving.gate compares with the base model (no threshold): it needs evaluation.compareBase true",
    lambda s: s.serving.gate is None or s.serving.gate.threshold is not None or s.evaluation.compare_base,
    cel=f"!({_CEL_GATE}) || has(self.serving.gate.threshold) || !has(self.evaluation) || !has(self.evaluation.compareBase) || self.evaluation.compareBase",
    field_path=".serving.gate",
)


def _gate_metric_evaluated(s) -> bool:
    name = s.serving.gate.metric
    if name == "evalLoss":
        return s.dataset.has_eval
    if name in _TEST_LOSSES:
        return s.evaluation.has_test
    return name in s.evaluation.metrics


SERVING_RULES = (SERVING_MERGED_NEEDS_MERGE, SERVING_ADAPTER_NEEDS_ADAPTER, SERVING_ADAPTER_NEEDS_EXPORT, SERVING_LORA_RANK,
                 SERVING_ADAPTER_LOADABLE, SERVING_POOL_NEEDS_ADAPTER, SERVING_ADAPTER_NEEDS_HF_BASE, SERVING_GATE_EVALUATED, SERVING_GATE_NEEDS_BASE)
WANDB_NEEDS_CREDENTIALS = Rule(
    "tracking.backend wandb needs credentials.tracking (a Secret key holding WANDB_API_KEY), or tracking.mode offline",
    lambda s: s.tracking.backend != "wandb" or s.tracking.mode == "offline" or s.credentials.tracking is not None,
    cel="!has(self.tracking) || self.tracking.backend != 'wandb' || (has(self.tracking.mode) && self.tracking.mode == 'offline')"
        " || (has(self.credentials) && has(self.credentials.tracking))",
    field_path=".tracking.backend",
)


class FineTuneJobSpec(ApiModel):
    """What to fine-tune, on what, how, and what to do with the result."""

    rules = (*METHOD_RULES, *SERVING_RULES, EARLY_STOPPING_NEEDS_EVAL, WANDB_NEEDS_CREDENTIALS, FULL_EXPORTS_NO_ADAPTER,
             KEEP_BEST_NEEDS_EVAL, *OBJECTIVE_RULES, ADAPTER_FROM_NEEDS_ADAPTER, ADAPTER_FROM_KEEPS_ITS_SHAPE,
             VALIDATION_METRICS_NEED_EVAL, VALIDATION_METRICS_NEED_SFT)

    model: ModelSpec = Field(description="The base model.", json_schema_extra=immutable("model"))
    dataset: DatasetSpec = Field(description="Training and evaluation data.", json_schema_extra=immutable("dataset"))
    method: Method = Field(description="lora: LoRA adapter on a bf16/fp32 base; qlora: LoRA on a 4-bit base; full: every weight.", json_schema_extra=immutable("method"))
    objective: Objective = Field(
        "sft", description="sft: supervised fine-tuning; grpo: group-relative policy optimisation on prompts with the rule-based rewards of spec.grpo; dpo: direct preference optimisation and orpo: odds-ratio preference optimisation, on pairwise preference rows; kto: Kahneman-Tversky optimisation on unpaired rows labelled desirable or not. Any method: with lora/qlora the reference model is the base with the adapter disabled (no second copy); with full, a frozen copy of the base (twice the weights' memory; ORPO needs no reference).",
        json_schema_extra=immutable("objective"))
    preference: PreferenceSpec | None = Field(None, description="DPO/ORPO settings (default beta 0.1, DPO loss sigmoid).")
    kto: KtoSpec | None = Field(None, description="KTO settings (default beta 0.1, weights 1).")
    grpo: GrpoSpec | None = Field(None, description="GRPO settings: sampling and the rule-based rewards (required by objective grpo).")
    lora: LoraSpec | None = Field(None, description="Adapter shape (lora/qlora; defaults r=16, alpha=32, all-linear).")
    quantization: QuantizationSpec | None = Field(None, description="Base-weight quantisation (qlora defaults to 4-bit nf4 with double quantisation).")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Hyper-parameters.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="GPUs, CPU, memory and placement per pod.")
    distributed: DistributedSpec = Field(default_factory=DistributedSpec, description="Nodes and parallelism strategy.")
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec, description="Checkpoint location, frequency and retention.")
    output: OutputSpec = Field(default_factory=OutputSpec, description="Output location and formats (adapter, merged, GGUF, Ollama).")
    serving: ServingSpec = Field(default_factory=ServingSpec, description="vLLM serving of the result.")
    credentials: CredentialsSpec = Field(default_factory=CredentialsSpec, description="Secret references.")
    tracking: TrackingSpec = Field(default_factory=TrackingSpec, description="W&B / MLflow, and TensorBoard event files; never holds training up (the Tracking condition says when it was degraded).")
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec, description="Held-out test evaluation of the base and the tuned model, task metrics and baselines.")
    image: str | None = Field(None, max_length=512, pattern=IMAGE_REF, description="Trainer image (default: the operator's; must match the operator's allowed prefixes).")
    suspend: bool = Field(False, description="Stop the pods, keep checkpoints; set back to false to resume from the newest checkpoint.")
    backoff_limit: int = Field(3, ge=0, le=100, description="Pod failures retried (each retry resumes from the newest checkpoint).")
    active_deadline_seconds: int | None = Field(None, ge=1, description="Fail the job after this many seconds of training.")
    ttl_seconds_after_finished: int | None = Field(None, ge=0, description="Delete the finished training Job (not this resource) after N seconds.")
    queue_name: str | None = Field(None, max_length=63, pattern=DNS_LABEL, description="Kueue LocalQueue to admit the job through.")
    priority_class_name: str | None = Field(None, max_length=253, pattern=DNS_SUBDOMAIN, description="PriorityClass of the training pods.")

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
    def resolved_deepspeed(self) -> DeepSpeedSpec | None:
        """ZeRO settings when the strategy is DeepSpeed: ZeRO-3 for full fine-tuning, 2 for adapters."""
        if self.resolved_strategy != "deepspeed":
            return None
        return self.distributed.deepspeed or DeepSpeedSpec(zero_stage=3 if self.method == "full" else 2)

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
