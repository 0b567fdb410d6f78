"""The evaluation section of the spec (`spec.evaluation`): the held-out test
set, task metrics, numeric decoding, baselines, validation-row metrics.
Re-exported by `kubetune_contract.sections` with the spec's other sections;
the metrics themselves are `evaluation_metrics`' registry."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from . import evaluation_metrics
from .base import ApiModel, Rule
from .uris import UriType

EvalMetricName = Literal[evaluation_metrics.SELECTABLE]
Baseline = Literal["mean", "linear", "randomForest"]
_NUMERIC_CEL = "[" + ", ".join(f"'{name}'" for name in evaluation_metrics.NUMERIC) + "]"
_NUMERIC_WORDS = ", ".join(evaluation_metrics.NUMERIC)


def _has_numeric_metric(e) -> bool:
    """A numeric metric on the test rows or the validation rows: either needs numeric decoding."""
    return any(evaluation_metrics.metric(m).numeric for m in (*e.metrics, *e.validation_metrics))


def _unique(values: list[str]) -> list[str]:
    # Field-level, like the API server's list-type set: the error names the field.
    seen = [v for i, v in enumerate(values) if v in values[:i]]
    if seen:
        raise ValueError(f"{seen[0]!r} is listed twice; list each once")
    return values


class NumericSpec(ApiModel):
    """How a numeric answer is read from the model (metrics mae, rmse, mape)."""

    top_k: int = Field(3, ge=1, le=20, description="The answer is the probability-weighted average of the k most probable numbers at the answer position (each extended greedily over as many tokens as it spans); 1 reads the greedy answer's number.")


class GenerationSpec(ApiModel):
    """How answers are generated for the task metrics."""

    max_new_tokens: int = Field(32, ge=1, le=4096, description="Tokens generated per answer.")
    temperature: float = Field(0.0, ge=0, le=2, description="0: greedy decoding (deterministic); above 0: sampling at this temperature with training.seed.")


class EvaluationSpec(ApiModel):
    """Held-out test evaluation of the base and the tuned model: loss and perplexity always, task metrics and baselines on request."""

    rules = (
        Rule("set either evaluation.testUri or evaluation.testSplit, not both",
             lambda e: not (e.test_uri and e.test_split is not None),
             cel="!(has(self.testUri) && has(self.testSplit))"),
        Rule("evaluation.metrics needs a held-out test set: set evaluation.testUri or evaluation.testSplit",
             lambda e: not e.metrics or e.has_test,
             cel="!has(self.metrics) || size(self.metrics) == 0 || has(self.testUri) || has(self.testSplit)",
             field_path=".metrics"),
        Rule(f"evaluation.numeric applies only with a numeric metric ({_NUMERIC_WORDS}) in evaluation.metrics or evaluation.validationMetrics",
             lambda e: e.numeric is None or _has_numeric_metric(e),
             cel=f"!has(self.numeric) || (has(self.metrics) && self.metrics.exists(m, m in {_NUMERIC_CEL})) || "
                 f"(has(self.validationMetrics) && self.validationMetrics.exists(m, m in {_NUMERIC_CEL}))",
             field_path=".numeric"),
        Rule(f"evaluation.baselines need a numeric metric ({_NUMERIC_WORDS}) in evaluation.metrics",
             lambda e: not e.baselines or any(evaluation_metrics.metric(m).numeric for m in e.metrics),
             cel=f"!has(self.baselines) || size(self.baselines) == 0 || (has(self.metrics) && self.metrics.exists(m, m in {_NUMERIC_CEL}))",
             field_path=".baselines"),
    )

    test_uri: UriType("hf", "s3", "pvc", "file", description="Held-out test data (same formats as the training data), never used for training, early stopping or choosing a checkpoint.") | None = None
    test_split: float | None = Field(None, gt=0, lt=0.5, description="Fraction of the training data held out as the test set (deterministic by seed), apart from the validation rows, when no testUri is given.")
    metrics: list[EvalMetricName] = Field(
        default_factory=list, max_length=16,
        description=f"Task metrics on the test set, the first one primary (shown in kubectl get and judged by the Fit condition): {', '.join(evaluation_metrics.SELECTABLE)}. Test loss and perplexity are always computed.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    validation_metrics: list[EvalMetricName] = Field(
        default_factory=list, max_length=16,
        description="Task metrics also scored for the tuned model on the validation rows (the first maxSamples), to choose between runs without touching the test rows: a FineTuneSweep judging its trials by a task metric sets this. Reported in status.evaluation.validation.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    numeric: NumericSpec | None = Field(None, description="Numeric answer decoding (default topK 3 when a numeric metric is listed).")
    generation: GenerationSpec = Field(default_factory=GenerationSpec, description="Answer generation settings.")
    max_samples: int = Field(200, ge=1, le=100_000, description="Test rows evaluated (the first N of the test set), the same rows for the base and the tuned model.")
    compare_base: bool = Field(True, description="Also evaluate the untouched base model on the same rows (cached with the checkpoints, so a resumed run does not redo it).")
    baselines: list[Baseline] = Field(
        default_factory=list, max_length=3,
        description="Classical baselines for numeric tasks, fitted on the training rows and scored on the same test rows: mean (the training answers' mean), linear (ridge regression on the prompt text), randomForest.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )

    @field_validator("metrics", "validation_metrics", "baselines")
    @classmethod
    def _listed_once(cls, values: list[str]) -> list[str]:
        return _unique(values)

    @property
    def has_test(self) -> bool:
        return bool(self.test_uri or self.test_split)

    @property
    def resolved_numeric(self) -> NumericSpec | None:
        """The numeric decoding in force: the spec's, or the default when a numeric metric is listed."""
        if self.numeric is not None:
            return self.numeric
        return NumericSpec() if _has_numeric_metric(self) else None
