"""Cross-field rules over a whole job that both the FineTuneJob spec and the
trainer config enforce: the same `Rule` objects are listed in both models, so
the API server (CEL), `kubetune validate` and the trainer refuse a bad
combination with one message. Each predicate reads attributes both models
have under the same names (`method`, `lora`, `quantization`, `training`,
`dataset`)."""

from __future__ import annotations

from .base import Rule
from .evaluation_metrics import PREFERENCE
from .formats import OBJECTIVE_FORMATS
from .grpo import GRPO_RULES
from .sections import PREFERENCE_OBJECTIVES

QLORA_NEEDS_4BIT = Rule(
    "method qlora needs quantization.bits 4",
    lambda s: not (s.method == "qlora" and s.quantization is not None and s.quantization.bits != 4),
    cel="self.method != 'qlora' || !has(self.quantization) || self.quantization.bits == 4",
    field_path=".quantization.bits",
)
FULL_CANNOT_QUANTIZE = Rule(
    "method full cannot use quantization: quantized weights cannot be trained; use lora or qlora",
    lambda s: not (s.method == "full" and s.quantization is not None),
    cel="self.method != 'full' || !has(self.quantization)",
    field_path=".quantization",
)
LORA_QUANTIZES_TO_8BIT = Rule(
    "method lora quantizes only to 8 bits; use method qlora for 4-bit",
    lambda s: not (s.method == "lora" and s.quantization is not None and s.quantization.bits != 8),
    cel="self.method != 'lora' || !has(self.quantization) || self.quantization.bits == 8",
    field_path=".quantization.bits",
)
LORA_SETTINGS_NEED_ADAPTER = Rule(
    "lora settings apply only to methods lora and qlora",
    lambda s: not (s.method == "full" and s.lora is not None),
    cel="self.method != 'full' || !has(self.lora)",
    field_path=".lora",
)
EARLY_STOPPING_NEEDS_EVAL = Rule(
    "training.earlyStopping needs evaluation data: set dataset.evalUri or dataset.evalSplit",
    lambda s: s.training.early_stopping is None or s.dataset.has_eval,
    cel="!has(self.training) || !has(self.training.earlyStopping) || (has(self.dataset.evalUri) || has(self.dataset.evalSplit))",
    field_path=".training.earlyStopping",
)
FULL_EXPORTS_NO_ADAPTER = Rule(
    "output.formats adapter needs method lora or qlora: method full trains every weight, so there is no adapter; export merged",
    lambda s: s.method != "full" or s.output.formats is None or "adapter" not in s.output.formats,
    cel="self.method != 'full' || !has(self.output) || !has(self.output.formats) || !('adapter' in self.output.formats)",
    field_path=".output.formats",
)

KEEP_BEST_NEEDS_EVAL = Rule(
    "training.keepBest needs evaluation data to choose by: set dataset.evalUri or dataset.evalSplit",
    lambda s: not s.training.keep_best or s.dataset.has_eval,
    cel="!has(self.training) || !has(self.training.keepBest) || !self.training.keepBest || (has(self.dataset.evalUri) || has(self.dataset.evalSplit))",
    field_path=".training.keepBest",
)

FSDP_NOT_PROVEN = Rule(
    "strategy fsdp is not available yet: on CPU the HF Trainer silently runs DDP instead, and no GPU run has "
    "proven it here; use deepspeed with zeroStage 3, which shards parameters, gradients and optimizer state as "
    "FSDP's full_shard does",
    lambda d: d.strategy != "fsdp",
    cel="self.strategy != 'fsdp'",
    field_path=".strategy",
)

VALIDATION_METRICS_NEED_EVAL = Rule(
    "evaluation.validationMetrics are scored on the validation rows: set dataset.evalUri or dataset.evalSplit",
    lambda s: not s.evaluation.validation_metrics or s.dataset.has_eval,
    cel="!has(self.evaluation) || !has(self.evaluation.validationMetrics) || size(self.evaluation.validationMetrics) == 0 || "
        "(has(self.dataset.evalUri) || has(self.dataset.evalSplit))",
    field_path=".evaluation.validationMetrics",
)

# --------------------------------------------------------------------------- objectives
# The predicates read `objective`, `preference`, `kto`, `dataset` and
# `evaluation`, which the spec and the trainer config both have.

_OBJECTIVE = "(has(self.objective) ? self.objective : 'sft')"
_CEL_FORMATS = "{" + ", ".join(f"'{o}': [{', '.join(repr(f) for f in fmts)}]" for o, fmts in OBJECTIVE_FORMATS.items()) + "}"
_FORMATS_WORDS = "; ".join(f"{o}: {', '.join(fmts)}" for o, fmts in OBJECTIVE_FORMATS.items())

PREFERENCE_NEEDS_PAIRWISE_OBJECTIVE = Rule(
    "preference settings apply only to objectives dpo and orpo",
    lambda s: s.preference is None or s.objective in ("dpo", "orpo"),
    cel=f"!has(self.preference) || {_OBJECTIVE} in ['dpo', 'orpo']",
    field_path=".preference",
)
LOSS_TYPE_NEEDS_DPO = Rule(
    "preference.lossType applies only to objective dpo: ORPO has a single loss",
    lambda s: s.preference is None or s.preference.loss_type is None or s.objective == "dpo",
    cel=f"!has(self.preference) || !has(self.preference.lossType) || {_OBJECTIVE} == 'dpo'",
    field_path=".preference.lossType",
)
KTO_SETTINGS_NEED_KTO = Rule(
    "kto settings apply only to objective kto",
    lambda s: s.kto is None or s.objective == "kto",
    cel=f"!has(self.kto) || {_OBJECTIVE} == 'kto'",
    field_path=".kto",
)
FORMAT_FITS_OBJECTIVE = Rule(
    f"dataset.format must be one the objective reads ({_FORMATS_WORDS}), or auto",
    lambda s: s.dataset.format == "auto" or s.dataset.format in OBJECTIVE_FORMATS[s.objective],
    cel=f"!has(self.dataset.format) || self.dataset.format == 'auto' || self.dataset.format in {_CEL_FORMATS}[{_OBJECTIVE}]",
    field_path=".dataset.format",
)
SOURCE_FORMATS_FIT_OBJECTIVE = Rule(
    f"dataset.sources[].format must be one the objective reads ({_FORMATS_WORDS}), or auto",
    lambda s: all(x.format == "auto" or x.format in OBJECTIVE_FORMATS[s.objective] for x in s.dataset.sources or []),
    cel=f"!has(self.dataset.sources) || self.dataset.sources.all(x, !has(x.format) || x.format == 'auto' || x.format in {_CEL_FORMATS}[{_OBJECTIVE}])",
    field_path=".dataset.sources",
)
PACKING_NEEDS_SFT = Rule(
    "dataset.packing applies only to objective sft: TRL's preference trainers score whole, unpacked pairs",
    lambda s: not s.dataset.packing or s.objective == "sft",
    cel=f"!has(self.dataset.packing) || !self.dataset.packing || {_OBJECTIVE} == 'sft'",
    field_path=".dataset.packing",
)
PREFERENCE_METRICS_ONLY = Rule(
    "objectives dpo, orpo and kto are evaluated by preferenceAccuracy only: their rows have no single reference answer "
    "to score generations against; and preferenceAccuracy needs objective dpo, orpo or kto",
    lambda s: all((m in PREFERENCE) == (s.objective in PREFERENCE_OBJECTIVES) for m in s.evaluation.metrics if s.objective != "grpo"),
    cel=f"!has(self.evaluation) || !has(self.evaluation.metrics) || {_OBJECTIVE} == 'grpo' || ({_OBJECTIVE} in ['dpo', 'orpo', 'kto'] ? "
        "self.evaluation.metrics.all(m, m == 'preferenceAccuracy') : !('preferenceAccuracy' in self.evaluation.metrics))",
    field_path=".evaluation.metrics",
)
STREAMING_NEEDS_SFT = Rule(
    "dataset.streaming supports objective sft only: the preference and GRPO trainers read their rows in memory; "
    "turn streaming off for this objective",
    lambda s: not s.dataset.streaming or s.objective == "sft",
    cel=f"!has(self.dataset.streaming) || !self.dataset.streaming || {_OBJECTIVE} == 'sft'",
    field_path=".dataset.streaming",
)
OBJECTIVE_RULES = (PREFERENCE_NEEDS_PAIRWISE_OBJECTIVE, LOSS_TYPE_NEEDS_DPO, KTO_SETTINGS_NEED_KTO, FORMAT_FITS_OBJECTIVE, SOURCE_FORMATS_FIT_OBJECTIVE,
                   PACKING_NEEDS_SFT, STREAMING_NEEDS_SFT, PREFERENCE_METRICS_ONLY, *GRPO_RULES)
VALIDATION_METRICS_NEED_SFT = Rule(
    "evaluation.validationMetrics score answers against a reference answer: they need objective sft "
    "(preferenceAccuracy ranks the test pairs only)",
    lambda s: not s.evaluation.validation_metrics or (s.objective == "sft" and not set(s.evaluation.validation_metrics) & set(PREFERENCE)),
    cel=f"!has(self.evaluation) || !has(self.evaluation.validationMetrics) || size(self.evaluation.validationMetrics) == 0 || "
        f"({_OBJECTIVE} == 'sft' && !('preferenceAccuracy' in self.evaluation.validationMetrics))",
    field_path=".evaluation.validationMetrics",
)

ADAPTER_FROM_NEEDS_ADAPTER = Rule(
    "model.adapterFrom continues a LoRA adapter: it needs method lora or qlora",
    lambda s: s.model.adapter_from is None or s.method != "full",
    cel="!has(self.model.adapterFrom) || self.method != 'full'",
    field_path=".model.adapterFrom",
)
# Spec only: the trainer config always carries the resolved adapter shape.
ADAPTER_FROM_KEEPS_ITS_SHAPE = Rule(
    "lora settings do not apply with model.adapterFrom: training continues that adapter, with its own shape",
    lambda s: s.model.adapter_from is None or s.lora is None,
    cel="!has(self.model.adapterFrom) || !has(self.lora)",
    field_path=".lora",
)

# In the order the API server reports them.
METHOD_RULES = (QLORA_NEEDS_4BIT, FULL_CANNOT_QUANTIZE, LORA_QUANTIZES_TO_8BIT, LORA_SETTINGS_NEED_ADAPTER)
JOB_RULES = (*METHOD_RULES, EARLY_STOPPING_NEEDS_EVAL, FULL_EXPORTS_NO_ADAPTER, KEEP_BEST_NEEDS_EVAL, *OBJECTIVE_RULES,
             ADAPTER_FROM_NEEDS_ADAPTER, VALIDATION_METRICS_NEED_EVAL, VALIDATION_METRICS_NEED_SFT)
