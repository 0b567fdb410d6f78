"""Every evaluation metric, declared once: its name (as the spec, the status and
the report spell it), a label in words, which direction is better, and which
split it is computed on.

The spec's `evaluation.metrics` accepts the names listed as selectable; the
trainer computes them; the report, `status.evaluation`, the printer column,
the serving gate and sweeps read the direction and the split from here. Nothing
else decides whether a number going up is good news.

Splits: `validation` rows steer training (eval loss, early stopping, the best
checkpoint); `test` rows are held out from all of that and only measured, so a
number on them is an honest estimate. A sweep must choose on validation rows.

Adding a metric is one `Metric(...)` line in `METRICS` (and its scorer in the
trainer's `evaluation.scoring`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Split = Literal["validation", "test"]


@dataclass(frozen=True)
class Metric:
    name: str  # camelCase: the spec's, status's and metrics.json's key
    label: str  # in words, for the report and the card
    short: str  # the printer column's abbreviation ("MAE 47.1 (base 146)")
    higher_is_better: bool
    split: Split
    # Scored on the number in each answer (mae, rmse, mape): the data's
    # answers must parse as numbers, and a numeric decoding applies.
    numeric: bool = False
    # Listed in spec.evaluation.metrics; the others (losses) are always computed.
    selectable: bool = True
    # Shown as a percentage of 1 (exact match 0.42 -> 42%).
    fraction: bool = False
    unit: str = ""  # appended in words where it helps ("%" for MAPE)


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("evalLoss", "validation loss", "val loss", False, "validation", selectable=False),
    Metric("testLoss", "test loss", "test loss", False, "test", selectable=False),
    Metric("perplexity", "test perplexity", "PPL", False, "test", selectable=False),
    Metric("exactMatch", "exact match", "EM", True, "test", fraction=True),
    Metric("tokenF1", "token F1", "F1", True, "test", fraction=True),
    Metric("rougeL", "ROUGE-L F1", "ROUGE-L", True, "test", fraction=True),
    Metric("bleu", "BLEU", "BLEU", True, "test"),
    Metric("chrF", "chrF", "chrF", True, "test"),
    Metric("mae", "mean absolute error", "MAE", False, "test", numeric=True),
    Metric("rmse", "root mean squared error", "RMSE", False, "test", numeric=True),
    Metric("mape", "mean absolute percentage error", "MAPE", False, "test", numeric=True, unit="%"),
    # Preference objectives (dpo, orpo, kto): the share of held-out pairs whose
    # chosen answer the model gives a higher log-probability than the rejected one.
    Metric("preferenceAccuracy", "held-out preference accuracy", "pref acc", True, "test", fraction=True),
)}
PREFERENCE = ("preferenceAccuracy",)

SELECTABLE = tuple(name for name, m in METRICS.items() if m.selectable)
NUMERIC = tuple(name for name, m in METRICS.items() if m.numeric)
# Always computed when their split exists.
LOSSES = tuple(name for name, m in METRICS.items() if not m.selectable)


def metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown evaluation metric {name!r}; known: {', '.join(METRICS)}") from None


def is_better(name: str, candidate: float, reference: float) -> bool:
    """Whether `candidate` is strictly better than `reference` on this metric."""
    if not (math.isfinite(candidate) and math.isfinite(reference)):
        return math.isfinite(candidate) and not math.isfinite(reference)
    return candidate > reference if metric(name).higher_is_better else candidate < reference


def improvement(name: str, base: float | None, tuned: float | None) -> float | None:
    """How much better `tuned` is than `base`, as a fraction of base, in the
    metric's good direction: 0.68 means 68% better, -0.1 means 10% worse.
    None when either is missing or base is 0 (no scale to compare against)."""
    if base is None or tuned is None or not (math.isfinite(base) and math.isfinite(tuned)) or base == 0:
        return None
    change = (tuned - base) / abs(base)
    return change if metric(name).higher_is_better else -change


def primary_metric(selected: list[str] | tuple[str, ...], *, has_test: bool, has_validation: bool) -> str | None:
    """The metric a job is judged by: the first one the spec lists, else the
    test loss, else the validation loss."""
    if selected:
        return selected[0]
    if has_test:
        return "testLoss"
    return "evalLoss" if has_validation else None


def format_value(name: str, value: float | None) -> str:
    """A metric's value as people read it: 3 significant digits, fractions as %."""
    if value is None or not math.isfinite(value):
        return "n/a"
    m = metric(name)
    if m.fraction:
        return f"{100 * value:.1f}%"
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if "e" in text:  # 3 significant digits of a large or tiny number
        text = f"{value:.4g}"
    return text + m.unit


def summary(name: str, tuned: float | None, base: float | None) -> str:
    """The printer column's text: `MAE 47.1 (base 146)`."""
    text = f"{metric(name).short} {format_value(name, tuned)}"
    if base is not None:
        text += f" (base {format_value(name, base)})"
    return text
