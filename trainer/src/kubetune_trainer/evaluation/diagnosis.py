"""Fit diagnosis: from the train and validation curves and the base/tuned
comparison to the `Fit` condition's reason, the evidence, and the remedy a
practitioner would give. The reasons, their order and their thresholds are
declared once in `kubetune_contract.fit`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from kubetune_contract import fit
from kubetune_contract.evaluation_metrics import format_value, improvement, is_better, metric
from kubetune_contract.fit import THRESHOLDS, FitThresholds

# A spike must also stand this many nats above the median: near zero, 0.01 -> 0.03
# is noise, not instability (the loss watchdog reasons the same way).
SPIKE_MARGIN = 0.1


@dataclass(frozen=True)
class Diagnosis:
    reason: str
    short: str  # for the verdict: "overfitting from step 900: consider 2 epochs"
    message: str  # the evidence and the remedy

    @property
    def status(self) -> str:
        return fit.condition_status(self.reason)

    def to_json(self) -> dict:
        return {"reason": self.reason, "status": self.status, "short": self.short, "message": self.message}


@dataclass(frozen=True)
class Curves:
    """What the run logged, in step order."""

    train: list[tuple[int, float]]  # (step, train loss)
    validation: list[tuple[int, float]]  # (step, validation loss)
    grad_norm: list[tuple[int, float]]

    @classmethod
    def of(cls, history: Sequence[dict]) -> Curves:
        def series(key):
            return [(int(h["step"]), float(h[key])) for h in history if h.get(key) is not None]
        return cls(series("trainLoss"), series("evalLoss"), series("gradNorm"))


@dataclass(frozen=True)
class Comparison:
    """The tuned model against the base, for the metrics the diagnosis reads."""

    base_eval_loss: float | None
    tuned_eval_loss: float | None
    primary: str | None
    base_primary: float | None
    tuned_primary: float | None


@dataclass(frozen=True)
class Schedule:
    """How long training ran, to turn a step into the epochs to suggest."""

    steps_per_epoch: float | None
    by_epochs: bool  # the spec set epochs (else maxSteps)


def _diverged(curves: Curves, cmp: Comparison) -> Diagnosis | None:
    for name, points in (("training", curves.train), ("validation", curves.validation)):
        bad = next(((s, v) for s, v in points if not math.isfinite(v)), None)
        if bad:
            return Diagnosis(fit.DIVERGED, f"{name} loss diverged at step {bad[0]}",
                             f"{name} loss became {bad[1]} at step {bad[0]}: lower training.learningRate (try 10x lower), "
                             "keep training.maxGradNorm at 1.0, and check the data for empty or corrupt rows")
    if cmp.tuned_eval_loss is not None and not math.isfinite(cmp.tuned_eval_loss):
        return Diagnosis(fit.DIVERGED, "validation loss diverged",
                         f"the tuned model's validation loss is {cmp.tuned_eval_loss}: lower training.learningRate (try 10x lower) "
                         "and check the data for empty or corrupt rows")
    return None


def _spike(train: list[tuple[int, float]], t: FitThresholds) -> tuple[int, float, float] | None:
    for i in range(1, len(train)):
        window = [v for _, v in train[max(0, i - t.spike_window):i]]
        median = statistics.median(window)
        step, value = train[i]
        if value > t.spike_factor * median and value > median + SPIKE_MARGIN:
            return step, value, median
    return None


def _unstable(curves: Curves, t: FitThresholds) -> Diagnosis | None:
    remedy = "lower training.learningRate, keep gradient clipping on (training.maxGradNorm 1.0), and check the data around that step"
    spike = _spike(curves.train, t)
    if spike:
        step, value, median = spike
        return Diagnosis(fit.UNSTABLE, f"unstable: loss spiked at step {step}",
                         f"training loss {value:.3g} at step {step} is above {t.spike_factor:g}x the median {median:.3g} of the "
                         f"{t.spike_window} logged before it: {remedy}")
    high = next(((s, g) for s, g in curves.grad_norm if g > t.max_grad_norm), None)
    if high:
        return Diagnosis(fit.UNSTABLE, f"unstable: gradient norm {high[1]:.3g} at step {high[0]}",
                         f"gradient norm {high[1]:.3g} at step {high[0]} is above {t.max_grad_norm:g}: {remedy}")
    return None


def _train_loss_at(train: list[tuple[int, float]], step: int) -> float | None:
    before = [v for s, v in train if s <= step]
    return before[-1] if before else None


def _epochs_hint(step: int, schedule: Schedule) -> str:
    if schedule.by_epochs and schedule.steps_per_epoch:
        epochs = max(1, round(step / schedule.steps_per_epoch))
        return f"consider {epochs} epoch{'s' if epochs != 1 else ''}"
    return f"consider training.maxSteps {step}"


def _overfitting(curves: Curves, schedule: Schedule, t: FitThresholds) -> Diagnosis | None:
    val = curves.validation
    if len(val) < t.rising_evaluations + 1:
        return None
    best = min(range(len(val)), key=lambda i: val[i][1])
    for j in range(best, len(val) - t.rising_evaluations):
        stretch = val[j:j + t.rising_evaluations + 1]
        if not all(b[1] > a[1] for a, b in zip(stretch, stretch[1:])):
            continue
        start, end = stretch[0], stretch[-1]
        before, after = _train_loss_at(curves.train, start[0]), _train_loss_at(curves.train, end[0])
        if before is None or after is None or not after < before:
            continue
        step = val[best][0]
        return Diagnosis(fit.OVERFITTING, f"overfitting from step {step}: {_epochs_hint(step, schedule)}",
                         f"validation loss rose on {t.rising_evaluations} evaluations in a row after step {start[0]} "
                         f"({start[1]:.3g} -> {end[1]:.3g}) while training loss fell ({before:.3g} -> {after:.3g}); "
                         f"lowest at step {step}: {_epochs_hint(step, schedule)}, or lower training.learningRate, raise "
                         "lora.dropout, add data; training.keepBest outputs the best checkpoint")
    return None


def _underfitting(cmp: Comparison, t: FitThresholds) -> Diagnosis | None:
    remedy = "raise training.learningRate or training.epochs (or lora.r), and check that the answers are learnable from the prompts"
    if cmp.base_eval_loss and cmp.tuned_eval_loss is not None:
        gained = (cmp.base_eval_loss - cmp.tuned_eval_loss) / cmp.base_eval_loss
        if gained < t.min_improvement:
            return Diagnosis(fit.UNDERFITTING, "underfitting: validation loss barely moved",
                             f"validation loss {cmp.tuned_eval_loss:.3g} improved {100 * gained:.1f}% on the base model's "
                             f"{cmp.base_eval_loss:.3g} (less than {100 * t.min_improvement:g}%): {remedy}")
    p = cmp.primary
    if p and p != "evalLoss" and cmp.base_primary is not None and cmp.tuned_primary is not None \
            and not is_better(p, cmp.tuned_primary, cmp.base_primary):
        label = metric(p).label
        return Diagnosis(fit.UNDERFITTING, f"underfitting: no better than base on {label}",
                         f"tuned {label} {format_value(p, cmp.tuned_primary)} is no better than the base model's "
                         f"{format_value(p, cmp.base_primary)}: {remedy}")
    return None


def _good(cmp: Comparison) -> Diagnosis:
    parts = []
    if cmp.base_eval_loss is not None and cmp.tuned_eval_loss is not None:
        parts.append(f"validation loss {cmp.base_eval_loss:.3g} -> {cmp.tuned_eval_loss:.3g}")
    p = cmp.primary
    gain = improvement(p, cmp.base_primary, cmp.tuned_primary) if p else None
    if p and p != "evalLoss" and gain is not None:
        parts.append(f"{metric(p).label} {100 * gain:.0f}% better than base")
    elif p and p != "evalLoss" and cmp.tuned_primary is not None and cmp.base_primary is not None:
        parts.append(f"{metric(p).label} {format_value(p, cmp.tuned_primary)} (base {format_value(p, cmp.base_primary)})")
    return Diagnosis(fit.GOOD, "no sign of over- or underfitting",
                     "; ".join(parts + ["no sign of overfitting, underfitting or instability"]))


def diagnose(history: Sequence[dict], cmp: Comparison, schedule: Schedule, thresholds: FitThresholds = THRESHOLDS) -> Diagnosis:
    curves = Curves.of(history)
    found = _diverged(curves, cmp) or _unstable(curves, thresholds)
    if found:
        return found
    if not curves.validation and cmp.tuned_eval_loss is None:
        return Diagnosis(fit.NO_VALIDATION_DATA, "fit unknown: no validation data",
                         "no validation rows, so over- and underfitting cannot be judged: set dataset.evalSplit or dataset.evalUri")
    return _overfitting(curves, schedule, thresholds) or _underfitting(cmp, thresholds) or _good(cmp)
