"""Fit diagnosis: the reasons of the `Fit` condition and the thresholds that
decide them, declared once. The trainer diagnoses (kubetune_trainer.evaluation
.diagnosis), the operator writes the condition, docs/trainer.md explains them.

Checked in this order; the first that holds is the verdict:

- Diverged: a non-finite train or validation loss.
- Unstable: a logged train loss above `spike_factor` x the median of the
  `spike_window` logged before it, or a gradient norm above `max_grad_norm`.
- Overfitting: validation loss rising on `rising_evaluations` evaluations in a
  row while train loss falls over the same stretch.
- Underfitting: validation loss improved by less than `min_improvement` of the
  base model's, or the tuned model's primary metric no better than the base's.
- Good: none of these.
- Unknown (reason NoValidationData): no validation rows, so neither curve can
  be judged.
"""

from __future__ import annotations

from dataclasses import dataclass

CONDITION = "Fit"

GOOD = "Good"
OVERFITTING = "Overfitting"
UNDERFITTING = "Underfitting"
UNSTABLE = "Unstable"
DIVERGED = "Diverged"
NO_VALIDATION_DATA = "NoValidationData"
REASONS = (GOOD, OVERFITTING, UNDERFITTING, UNSTABLE, DIVERGED, NO_VALIDATION_DATA)


def condition_status(reason: str) -> str:
    """The condition's status for a reason: True only for a good fit."""
    if reason == GOOD:
        return "True"
    return "Unknown" if reason == NO_VALIDATION_DATA else "False"


@dataclass(frozen=True)
class FitThresholds:
    rising_evaluations: int = 3
    min_improvement: float = 0.02  # of the base model's validation loss
    spike_factor: float = 2.0
    spike_window: int = 10
    max_grad_norm: float = 100.0


THRESHOLDS = FitThresholds()
