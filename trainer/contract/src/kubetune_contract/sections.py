"""The spec sections the trainer consumes as the user wrote them (after the
operator resolved what the user left out): model, dataset (`dataset_section`), adapter,
quantization, training, checkpoint, output, tracking, evaluation.

Each field is declared here once, with its bounds, its default and its
description: the operator's FineTuneJob spec composes these classes (so the
CRD and the README reference are generated from them), and `TrainerConfig`
composes the same classes, so a default or a bound cannot drift between the two.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

from .base import ApiModel, Rule, cel_field, no_expansion, no_expansion_field
from .uris import GGUF_SUFFIX, UriType, is_gguf

# --------------------------------------------------------------------------- model


# A FineTuneJob name (DNS-1123 subdomain) or an adapter URI.
ADAPTER_FROM_PATTERN = r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?|(s3|pvc|file|hf)://\S+)$"


class ModelSpec(ApiModel):
    """The base model to fine-tune."""

    rules = (
        Rule("revision applies only to hf:// models; pin other sources by path",
             lambda m: not (m.revision and not m.uri.startswith("hf://"))),
        Rule(f"a {GGUF_SUFFIX} model on the Hugging Face Hub is named with its repository: hf://org/name/file{GGUF_SUFFIX}",
             lambda m: not (m.gguf and m.uri.startswith("hf://") and m.uri.count("/") < 4),
             cel=f"!(self.uri.startsWith('hf://') && self.uri.endsWith('{GGUF_SUFFIX}')) || self.uri.matches('^hf://[^/]+/[^/]+/.+')",
             field_path=".uri"),
        Rule(f"trustRemoteCode does not apply to a {GGUF_SUFFIX} model: a GGUF file holds weights and a tokenizer, no code",
             lambda m: not (m.gguf and m.trust_remote_code),
             cel=f"!(self.uri.endsWith('{GGUF_SUFFIX}') && has(self.trustRemoteCode) && self.trustRemoteCode)",
             field_path=".trustRemoteCode"),
    )

    uri: UriType("hf", "hf-gguf", "s3", "pvc", "file", description=(
        "Where the base model lives: a Hugging Face model directory (hf://org/name, s3://bucket/prefix, pvc://claim/path, "
        f"or file://path for local runs and baked-in images), or one GGUF file (a URI ending in {GGUF_SUFFIX}, e.g. "
        f"hf://org/name/model.Q4_K_M{GGUF_SUFFIX} or s3://bucket/models/model{GGUF_SUFFIX}), which the trainer dequantises "
        "into the training precision before training (architectures and quantisation types transformers can read)."))
    revision: str | None = Field(None, max_length=256, description="Hugging Face revision (branch, tag or commit) for hf:// models.")
    trust_remote_code: bool = Field(False, description="Allow the model repository's own Python code to run. Off unless you trust the source.")
    adapter_from: Annotated[str, Field(max_length=2048, pattern=ADAPTER_FROM_PATTERN), AfterValidator(no_expansion)] | None = Field(
        None, json_schema_extra=no_expansion_field(),
        description="Continue training an earlier adapter (methods lora, qlora): the name of a FineTuneJob in this namespace (the operator waits while it does not exist yet or runs, fails if it failed, and uses its status.output.adapterUri) or an adapter's URI (s3://, pvc://, file://, hf://). The reference model of dpo and kto is then that adapter, frozen; the output is again one adapter on the original base.")

    @property
    def gguf(self) -> bool:  # the base model is one GGUF file
        return is_gguf(self.uri)

    @property
    def adapter_from_job(self) -> str | None:  # the FineTuneJob adapterFrom names; None: unset, or a URI
        return self.adapter_from if self.adapter_from and "://" not in self.adapter_from else None


# --------------------------------------------------------------------------- dataset

from .dataset_section import MAX_SOURCES, ColumnMapping, DatasetFormat, DatasetSource, DatasetSpec  # noqa: E402,F401  (one place)


# --------------------------------------------------------------------------- objective

Objective = Literal["sft", "dpo", "orpo", "kto", "grpo"]
PREFERENCE_OBJECTIVES = ("dpo", "orpo", "kto")
DpoLoss = Literal["sigmoid", "ipo", "hinge", "robust"]

class PreferenceSpec(ApiModel):
    """DPO and ORPO settings (objectives dpo, orpo)."""

    beta: float = Field(0.1, gt=0, le=100, description="DPO: how far the model may move from the reference (lower: further); ORPO: the weight of the odds-ratio term beside the SFT loss.")
    loss_type: DpoLoss | None = Field(None, description="DPO only: sigmoid (the DPO paper's, the default), ipo, hinge (SLiC) or robust (noisy labels).")


class KtoSpec(ApiModel):
    """KTO settings (objective kto): weights of desirable and undesirable examples."""

    beta: float = Field(0.1, gt=0, le=100, description="How far the model may move from the reference (lower: further).")
    desirable_weight: float = Field(1.0, gt=0, le=100, description="Loss weight of rows labelled true; raise it when they are rarer than the false ones.")
    undesirable_weight: float = Field(1.0, gt=0, le=100, description="Loss weight of rows labelled false.")


# --------------------------------------------------------------------------- method

Method = Literal["lora", "qlora", "full"]
ALL_LINEAR = "all-linear"
ALL_LINEAR_ALONE = "all-linear cannot be combined with other module names"


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
            **cel_field("!self.exists(m, m == 'all-linear') || size(self) == 1", ALL_LINEAR_ALONE),
        },
    )
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA). vLLM cannot load DoRA adapters: serve such a job with serving.mode merged.")
    modules_to_save: list[Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")]] = Field(
        default_factory=list, max_length=16,
        description="Modules trained in full and saved with the adapter (e.g. embed_tokens, lm_head). vLLM cannot load such adapters: serve with serving.mode merged.",
        json_schema_extra={"default": []},
    )

    @field_validator("target_modules")
    @classmethod
    def _all_linear_alone(cls, modules: list[str]) -> list[str]:
        # Field-level, like its CEL rule: the error names spec.lora.targetModules.
        if ALL_LINEAR in modules and len(modules) > 1:
            raise ValueError(ALL_LINEAR_ALONE)
        return modules


class QuantizationSpec(ApiModel):
    """bitsandbytes quantisation of the frozen base weights (qlora: 4-bit; lora: optionally 8-bit)."""

    bits: Literal[4, 8] = Field(4, description="4 (QLoRA) or 8.")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type.")
    double_quant: bool = Field(True, description="Quantise the quantisation constants too (saves ~0.4 bit/param).")
    compute_dtype: Literal["bfloat16", "float16", "float32"] = Field("bfloat16", description="dtype the de-quantised matmuls run in.")


# --------------------------------------------------------------------------- training

LrScheduler = Literal["cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial", "inverse_sqrt"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]
DEFAULT_EPOCHS = 3.0


class EarlyStoppingSpec(ApiModel):
    """Stop when eval loss stops improving (needs evaluation data)."""

    patience: int = Field(3, ge=1, le=1000, description="Evaluations without improvement before stopping.")
    threshold: float = Field(0.0, ge=0, description="Minimum decrease in eval loss that counts as improvement.")


class TrainingSpec(ApiModel):
    """Optimisation hyper-parameters. Defaults follow the conservative LoRA recipe."""

    rules = (
        Rule("set either epochs or maxSteps, not both",
             lambda t: not (t.epochs is not None and t.max_steps is not None),
             cel="!(has(self.epochs) && has(self.maxSteps))"),
    )

    epochs: float | None = Field(None, gt=0, le=1000, description=f"Passes over the training data (default {DEFAULT_EPOCHS:g} when maxSteps is not set).")
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
    precision: Precision = Field("auto", description="Training precision; auto picks bf16 on GPUs that support it, fp32 on CPU.")
    eval_every_steps: int | None = Field(None, ge=1, le=10_000_000, description="Evaluate every N steps (default: once per epoch when there is eval data).")
    log_every_steps: int = Field(10, ge=1, le=100_000, description="Log and export metrics every N steps.")
    early_stopping: EarlyStoppingSpec | None = Field(None, description="Stop early on an eval-loss plateau.")
    keep_best: bool = Field(False, description="Output the checkpoint with the lowest validation loss instead of the last one (needs evaluation data); retention never deletes it, status.checkpoint.best names it.")

    @property
    def resolved_epochs(self) -> float | None:
        """The epochs that run: the default when neither epochs nor maxSteps is set."""
        if self.max_steps is not None:
            return None
        return self.epochs if self.epochs is not None else DEFAULT_EPOCHS


# --------------------------------------------------------------------------- distribution

ConcreteStrategy = Literal["none", "ddp", "deepspeed", "fsdp"]


class DeepSpeedSpec(ApiModel):
    """DeepSpeed ZeRO settings (strategy deepspeed, or auto when it picks DeepSpeed)."""

    rules = (
        Rule("offloadParams needs zeroStage 3", lambda z: not (z.offload_params and z.zero_stage != 3),
             cel="!self.offloadParams || self.zeroStage == 3"),
    )

    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="ZeRO stage: 2 shards optimizer state and gradients, 3 also parameters.")
    offload_optimizer: bool = Field(False, description="Keep optimizer state in CPU memory.")
    offload_params: bool = Field(False, description="Keep parameters in CPU memory (stage 3 only).")


# --------------------------------------------------------------------------- storage


class CheckpointSpec(ApiModel):
    """Where and how often to checkpoint. Jobs resume from the newest committed checkpoint."""

    uri: UriType("s3", "pvc", "file", description="Checkpoint prefix (default: the operator's bucket, <namespace>/<name>/checkpoints).") | None = None
    resume_from: UriType("s3", "pvc", "file", description=(
        "Continue another run's checkpoint: a checkpoint's URI (status.checkpoint.uri of that job, .../step-NNNNNNNN) or a run's "
        "prefix (its newest committed step). A job only resumes its own checkpoints by itself (its UID and settings must match); "
        "this is how a re-created job, or one with changed settings, continues an earlier one. Used when this job has no "
        "checkpoint of its own yet; recorded in status.checkpoint.resumedFrom and the report.")) | None = None
    every_steps: int = Field(100, ge=1, le=10_000_000, description="Checkpoint every N optimizer steps (also on SIGTERM).")
    keep_last: int = Field(3, ge=1, le=100, description="Committed checkpoints kept; older ones are deleted.")


OutputFormat = Literal["adapter", "merged", "gguf", "ollama"]
# The order exporters run in: gguf converts the merged model, ollama points at the gguf file.
OUTPUT_FORMATS: tuple[str, ...] = ("adapter", "merged", "gguf", "ollama")
GgufQuantization = Literal["f16", "q8_0", "q4_k_m"]
MERGE_CONTRADICTS_FORMATS = "output.merge contradicts output.formats: merge: true means merged is in formats; set one of them"
FORMATS_UNIQUE = "output.formats lists a format twice"


class GgufSpec(ApiModel):
    """The GGUF file (llama.cpp, Ollama, LM Studio) made from the merged model."""

    quantization: GgufQuantization = Field(
        "q8_0", description="f16: 16-bit floats; q8_0: 8-bit (about half of f16); q4_k_m: 4-bit K-quant (about a third of f16; needs tensor widths that are multiples of 256).")


class OutputSpec(ApiModel):
    """Where the result goes, and in which formats."""

    rules = (
        Rule(MERGE_CONTRADICTS_FORMATS,
             lambda o: o.merge is None or o.formats is None or o.merge == ("merged" in o.formats),
             cel="!has(self.merge) || !has(self.formats) || self.merge == ('merged' in self.formats)", field_path=".merge"),
        Rule("output.formats ollama needs gguf too: the Modelfile points at the GGUF file",
             lambda o: o.formats is None or "ollama" not in o.formats or "gguf" in o.formats,
             cel="!has(self.formats) || !('ollama' in self.formats) || 'gguf' in self.formats", field_path=".formats"),
        Rule("output.gguf applies only when output.formats lists gguf",
             lambda o: o.gguf is None or (o.formats is not None and "gguf" in o.formats),
             cel="!has(self.gguf) || (has(self.formats) && 'gguf' in self.formats)", field_path=".gguf"),
    )

    uri: UriType("s3", "pvc", "file", description="Output prefix for the adapter, merged model and report (default: the operator's bucket, <namespace>/<name>/output).") | None = None
    merge: bool | None = Field(None, description="Also write the base model with the adapter merged in (the same as listing merged in formats).")
    formats: list[OutputFormat] | None = Field(
        None, min_length=1, max_length=len(OUTPUT_FORMATS),
        description="What to export (default: adapter; method full: merged). adapter: the LoRA adapter; merged: the base with the adapter merged in, safetensors; gguf: the merged model as one GGUF file (llama.cpp); ollama: an Ollama Modelfile beside the GGUF file (needs gguf).",
        json_schema_extra=cel_field("self.all(x, self.exists_one(y, y == x))", FORMATS_UNIQUE),
    )
    gguf: GgufSpec | None = Field(None, description="GGUF settings (with gguf in formats; default quantization q8_0).")

    @field_validator("formats")
    @classmethod
    def _unique(cls, formats: list[str] | None) -> list[str] | None:
        if formats is not None and len(set(formats)) != len(formats):
            raise ValueError(FORMATS_UNIQUE)
        return formats


def resolve_formats(method: str, output: OutputSpec) -> list[str]:
    """The formats a job exports, in the order they run: what `formats` lists,
    else the adapter (method full: the merged model), plus merged for `merge: true`."""
    if output.formats is not None:
        wanted = set(output.formats)
    else:
        wanted = {"merged"} if method == "full" else {"adapter"}
        if output.merge:
            wanted.add("merged")
    return [name for name in OUTPUT_FORMATS if name in wanted]


class S3Location(ApiModel):
    """Where an S3-compatible store is; the keys come from a Secret, never from here."""

    endpoint: Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\s/]+(/[^\s]*)?$"), AfterValidator(no_expansion)] | None = Field(
        None, json_schema_extra=no_expansion_field(),
        description="Endpoint of an S3-compatible store (MinIO, Ceph...); AWS when unset.")
    region: str | None = Field(None, max_length=64, pattern=r"^[a-z0-9-]+$", description="Bucket region.")


# --------------------------------------------------------------------------- tracking


# W&B can write its run files locally and sync later; MLflow logs to a server only.
OFFLINE_BACKENDS = ("wandb",)
TRACKING_OFFLINE_NEEDS_WANDB = Rule(
    "tracking.mode offline needs backend wandb: mlflow has no offline mode (it logs to the server at tracking.uri); "
    "for local files use tracking.tensorboard",
    lambda t: t.mode != "offline" or t.backend in OFFLINE_BACKENDS,
    cel="!has(self.mode) || self.mode != 'offline' || (has(self.backend) && self.backend == 'wandb')",
    field_path=".mode",
)
TRACKING_MLFLOW_NEEDS_URI = Rule(
    "tracking.backend mlflow needs tracking.uri: the MLflow tracking server (e.g. http://mlflow.mlflow:5000)",
    lambda t: t.backend != "mlflow" or t.uri is not None,
    cel="!has(self.backend) || self.backend != 'mlflow' || has(self.uri)",
    field_path=".uri",
)


class TrackingSpec(ApiModel):
    """Optional experiment tracking; metrics always go to Prometheus regardless.

    Tracking never holds training up: the trainer calls the tracker off the
    training loop with short timeouts, and a tracker that does not answer turns
    into the Tracking condition (False, TrackingDegraded) while training goes on."""

    rules = (TRACKING_OFFLINE_NEEDS_WANDB, TRACKING_MLFLOW_NEEDS_URI)

    backend: Literal["none", "wandb", "mlflow"] = Field("none", description="Experiment tracker.")
    project: str | None = Field(None, max_length=128, description="W&B project or MLflow experiment name.")
    uri: Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\s]+$"), AfterValidator(no_expansion)] | None = Field(
        None, json_schema_extra=no_expansion_field(), description="MLflow tracking URI or W&B host.")
    mode: Literal["online", "offline"] = Field(
        "online", description="online: log to the tracker as training runs. offline (W&B only): no key needed; the run files "
                              "are written with the outputs under `<output uri>/tracking/wandb`, for `wandb sync` later.")
    tensorboard: bool = Field(
        False, description="Also write TensorBoard event files (training and validation loss, learning rate), uploaded with "
                           "the outputs under `<output uri>/tracking/tensorboard`.")


# --------------------------------------------------------------------------- evaluation (its own module)

from .evaluation_spec import (  # noqa: E402 - re-exported: every spec section is importable from here
    Baseline,
    EvalMetricName,
    EvaluationSpec,
    GenerationSpec,
    NumericSpec,
)
