"""Fit diagnosis from curves made by hand: each reason, its evidence and its
remedy, the thresholds from kubetune_contract.fit, and the order they are
checked in."""

from __future__ import annotations

import math

from kubetune_contract import fit
from kubetune_trainer.evaluation.diagnosis import Comparison, Schedule, diagnose

BY_EPOCHS = Schedule(steps_per_epoch=300, by_epochs=True)
GAINED = Comparison(base_eval_loss=4.0, tuned_eval_loss=1.0, primary="mae", base_primary=146.0, tuned_primary=47.1)


def curve(train: list[float], val: list[float], every: int = 100, grad: list[float] | None = None) -> list[dict]:
    out = [{"step": (i + 1) * every // 2, "trainLoss": v} for i, v in enumerate(train)]
    out += [{"step": (i + 1) * every, "evalLoss": v} for i, v in enumerate(val)]
    out += [{"step": (i + 1) * every // 2, "gradNorm": g} for i, g in enumerate(grad or [])]
    return sorted(out, key=lambda h: h["step"])


FALLING = [3.0, 2.5, 2.0, 1.7, 1.5, 1.3, 1.1, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1]


def test_good_fit_says_so_with_the_evidence():
    d = diagnose(curve(FALLING, [3.0, 2.0, 1.5, 1.2, 1.1, 1.0, 0.95, 0.9, 0.9]), GAINED, BY_EPOCHS)
    assert d.reason == fit.GOOD and d.status == "True"
    assert "4 -> 1" in d.message and "mean absolute error 68% better than base" in d.message


def test_overfitting_when_validation_rises_three_times_in_a_row_while_train_falls():
    val = [3.0, 2.0, 1.5, 1.2, 1.3, 1.45, 1.6, 1.8, 2.0]  # lowest at step 400, then rising
    d = diagnose(curve(FALLING, val), GAINED, BY_EPOCHS)
    assert d.reason == fit.OVERFITTING and d.status == "False"
    assert d.short == "overfitting from step 400: consider 1 epoch"
    assert "rose on 3 evaluations in a row after step 400 (1.2 -> 1.6)" in d.message
    assert "training.learningRate" in d.message and "lora.dropout" in d.message and "add data" in d.message


def test_two_rises_are_noise_not_overfitting():
    val = [3.0, 2.0, 1.5, 1.2, 1.3, 1.4, 1.1, 1.15, 1.2]  # never three in a row after the lowest
    assert diagnose(curve(FALLING, val), GAINED, BY_EPOCHS).reason == fit.GOOD


def test_rising_validation_with_rising_train_loss_is_not_overfitting():
    rising = [3.0, 2.0, 1.0, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3, 1.35, 1.4, 1.45, 1.5, 1.55, 1.6]
    d = diagnose(curve(rising, [3.0, 2.0, 1.5, 1.2, 1.3, 1.45, 1.6, 1.8, 2.0]), GAINED, BY_EPOCHS)
    # No rule reads both curves rising (the comparison with base still gained), so it is judged Good.
    assert (d.reason, d.status, d.short) == (fit.GOOD, "True", "no sign of over- or underfitting"), d
    assert d.message.startswith("validation loss 4 -> 1;"), d.message


def test_overfitting_with_max_steps_suggests_steps():
    d = diagnose(curve(FALLING, [3.0, 2.0, 1.5, 1.2, 1.3, 1.45, 1.6, 1.8, 2.0]), GAINED, Schedule(None, by_epochs=False))
    assert d.short == "overfitting from step 400: consider training.maxSteps 400"


def test_underfitting_when_validation_barely_improves_on_base():
    barely = Comparison(base_eval_loss=4.0, tuned_eval_loss=3.95, primary="mae", base_primary=146.0, tuned_primary=140.0)
    d = diagnose(curve(FALLING, [3.99, 3.98, 3.97, 3.96, 3.95]), barely, BY_EPOCHS)
    assert d.reason == fit.UNDERFITTING
    assert "improved 1.2% on the base model's 4 (less than 2%)" in d.message and "raise training.learningRate or training.epochs" in d.message


def test_underfitting_when_the_primary_metric_is_no_better_than_base():
    worse = Comparison(base_eval_loss=4.0, tuned_eval_loss=1.0, primary="exactMatch", base_primary=0.5, tuned_primary=0.5)
    d = diagnose(curve(FALLING, [3.0, 2.0, 1.5, 1.2, 1.0]), worse, BY_EPOCHS)
    assert d.reason == fit.UNDERFITTING and d.short == "underfitting: no better than base on exact match"
    assert "tuned exact match 50.0% is no better than the base model's 50.0%" in d.message


def test_unstable_on_a_loss_spike_or_a_huge_gradient_norm():
    spiky = FALLING[:12] + [2.5] + FALLING[13:]  # 2.5 against a median of ~1.0 over the 10 before
    d = diagnose(curve(spiky, [3.0, 2.0, 1.5, 1.2, 1.0]), GAINED, BY_EPOCHS)
    assert d.reason == fit.UNSTABLE and "step 650" in d.message and "clipping" in d.message
    grads = [5.0] * 6 + [250.0] + [5.0] * 11
    d = diagnose(curve(FALLING, [3.0, 2.0, 1.5, 1.2, 1.0], grad=grads), GAINED, BY_EPOCHS)
    assert d.reason == fit.UNSTABLE and "gradient norm 250 at step 350" in d.message


def test_a_spike_near_zero_loss_is_noise():
    tiny = [3.0, 1.0, 0.3] + [0.01, 0.012, 0.009, 0.011, 0.01, 0.03, 0.01, 0.011, 0.01]  # 0.03 is 3x, but 0.02 nats
    assert diagnose(curve(tiny, [3.0, 2.0, 1.5, 1.2, 1.0]), GAINED, BY_EPOCHS).reason == fit.GOOD


def test_diverged_beats_everything():
    d = diagnose(curve(FALLING[:5] + [math.nan], [3.0, 2.0, 1.5, 1.2, 1.3, 1.45, 1.6]), GAINED, BY_EPOCHS)
    assert d.reason == fit.DIVERGED and "lower training.learningRate" in d.message


def test_no_validation_data_is_unknown():
    none = Comparison(base_eval_loss=None, tuned_eval_loss=None, primary=None, base_primary=None, tuned_primary=None)
    d = diagnose(curve(FALLING, []), none, BY_EPOCHS)
    assert (d.reason, d.status) == (fit.NO_VALIDATION_DATA, "Unknown")
    assert "dataset.evalSplit" in d.message
